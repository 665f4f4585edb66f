//! The notes conversion: the older notes service's reply shape
//! (`matters_discussed`, `our_actions`, `full_text`), over JSON and gRPC.

use crate::proto::notes::{notes_server::Notes, ConvertChunk, ConvertReply, ConvertRequest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;

pub const GRPC_SERVICE: &str = crate::proto::notes::notes_server::SERVICE_NAME;

/// Lines that read like actions ("we will", "action:", "todo") are actions;
/// every non-empty line is a matter discussed.
fn split(notes: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<String> = notes
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let actions = lines
        .iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("action") || l.starts_with("todo") || l.contains("we will")
        })
        .cloned()
        .collect();
    (lines, actions)
}

pub fn convert_json(notes: &str, client_name: &str, served_by: &str) -> serde_json::Value {
    let (matters, actions) = split(notes);
    serde_json::json!({
        "matters_discussed": matters,
        "our_actions": actions,
        "full_text": notes,
        "client_name": client_name,
        "served_by": served_by,
    })
}

pub struct NotesService {
    name: String,
    ready: Arc<AtomicBool>,
}

impl NotesService {
    pub fn new(name: String, ready: Arc<AtomicBool>) -> Self {
        NotesService { name, ready }
    }

    fn check_ready(&self) -> Result<(), tonic::Status> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(tonic::Status::unavailable("still loading"))
        }
    }
}

#[tonic::async_trait]
impl Notes for NotesService {
    async fn convert(
        &self,
        req: tonic::Request<ConvertRequest>,
    ) -> Result<tonic::Response<ConvertReply>, tonic::Status> {
        self.check_ready()?;
        let r = req.into_inner();
        let (matters, actions) = split(&r.notes);
        Ok(tonic::Response::new(ConvertReply {
            matters_discussed: matters,
            our_actions: actions,
            full_text: r.notes,
            served_by: self.name.clone(),
        }))
    }

    type ConvertStreamStream = ReceiverStream<Result<ConvertChunk, tonic::Status>>;

    async fn convert_stream(
        &self,
        req: tonic::Request<ConvertRequest>,
    ) -> Result<tonic::Response<Self::ConvertStreamStream>, tonic::Status> {
        self.check_ready()?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let name = self.name.clone();
        let lines: Vec<String> = req.into_inner().notes.lines().map(str::to_string).collect();
        tokio::spawn(async move {
            for line in lines {
                if tx
                    .send(Ok(ConvertChunk {
                        line,
                        served_by: name.clone(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_matters_are_split_out() {
        let v = convert_json(
            "Budget review\nAction: send the quote\nwe will call Tuesday",
            "acme",
            "notes-coa",
        );
        assert_eq!(v["matters_discussed"].as_array().unwrap().len(), 3);
        assert_eq!(v["our_actions"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["full_text"],
            "Budget review\nAction: send the quote\nwe will call Tuesday"
        );
        assert_eq!(v["client_name"], "acme");
    }
}
