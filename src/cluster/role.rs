//! Where a coordinator stands in its cluster's placement election.

/// Whether this coordinator is the placement leader, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Elected at this instant (the failover grace counts from it).
    Leader {
        since: tokio::time::Instant,
    },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader { .. } => "leader",
        }
    }
}
