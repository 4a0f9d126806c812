//! `stolon_store_last_success_seconds`: when this process last got an answer from the store,
//! read at scrape time from the store handle (src/store/contact.rs).

use crate::store::LastContact;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

pub(super) const NAME: &str = "stolon_store_last_success_seconds";
const HELP: &str =
    "Last time a request to the store succeeded as seconds since unix epoch (0: never).";

#[derive(Debug)]
pub(super) struct StoreContact(pub(super) LastContact);

impl Collector for StoreContact {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seconds = self.0.get().map_or(0.0, super::unix_seconds);
        let gauge = ConstGauge::new(seconds);
        let metric = encoder.encode_descriptor(NAME, HELP, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}
