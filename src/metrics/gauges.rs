//! Gauges read at scrape time from the state they describe (the registry's
//! counts, the route table, the catalog's gaps, the cluster's role), so
//! there is no second copy of that state to keep in step.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::sync::Arc;

/// One sample: its labels and value.
pub type Sample = (Vec<(&'static str, String)>, i64);

/// One gauge family, and how to read it.
pub struct GaugeReading {
    pub name: &'static str,
    pub help: &'static str,
    pub read: Arc<dyn Fn() -> Vec<Sample> + Send + Sync>,
}

/// The gauges a coordinator reads at each scrape.
#[derive(Default)]
pub struct Gauges {
    readings: Vec<GaugeReading>,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.readings.iter().map(|r| r.name)).finish()
    }
}

impl Gauges {
    pub fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> &mut Self {
        self.readings.push(GaugeReading {
            name,
            help,
            read: Arc::new(read),
        });
        self
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for r in &self.readings {
            let samples = (r.read)();
            let mut family = encoder.encode_descriptor(r.name, r.help, None, MetricType::Gauge)?;
            for (labels, value) in samples {
                let metric = family.encode_family(&labels)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}
