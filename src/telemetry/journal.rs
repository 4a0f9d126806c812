//! Structured journald records: every record carries `CLUSTER_NAME` and `ROLE`, plus
//! `KEEPER_UID` / `DB_UID` once the keeper knows them; event and span fields keep their own
//! names, upper-cased (`db = ..` → `DB=`); PostgreSQL's forwarded lines (target `postgres`)
//! are sent with `SYSLOG_IDENTIFIER=postgres` so `journalctl -t postgres` shows them apart.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, RwLock};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The tracing target the postgres module forwards PostgreSQL's stderr under.
pub const POSTGRES_TARGET: &str = "postgres";

/// The process-wide fields, shared between the installed layer and [`Fields::set`].
#[derive(Clone)]
pub(super) struct Fields(Arc<RwLock<State>>);

struct State {
    identifier: String,
    values: BTreeMap<&'static str, String>,
    ours: tracing_journald::Layer,
    postgres: tracing_journald::Layer,
}

impl Fields {
    pub(super) fn new(
        identifier: &str,
        values: BTreeMap<&'static str, String>,
    ) -> io::Result<Fields> {
        let (ours, postgres) = build(identifier, &values)?;
        Ok(Fields(Arc::new(RwLock::new(State {
            identifier: identifier.to_string(),
            values,
            ours,
            postgres,
        }))))
    }

    /// Sets (or with `None` removes) a field on every record from now on.
    pub(super) fn set(&self, name: &'static str, value: Option<&str>) {
        let mut state = self.0.write().unwrap_or_else(|p| p.into_inner());
        let mut values = state.values.clone();
        match value {
            Some(v) => values.insert(name, v.to_string()),
            None => values.remove(name),
        };
        if values == state.values {
            return;
        }
        let result = build(&state.identifier, &values).map(|(ours, postgres)| {
            state.values = values;
            state.ours = ours;
            state.postgres = postgres;
        });
        // Logged after releasing the lock: logging takes it too.
        drop(state);
        if let Err(e) = result {
            // journald went away under us: the records keep their old fields.
            tracing::debug!(error = %e, field = name, "cannot rebuild the journald layer");
        }
    }

    pub(super) fn layer(&self) -> JournalLayer {
        JournalLayer(self.clone())
    }
}

/// Sends each record to journald, through the current [`Fields`].
pub(super) struct JournalLayer(Fields);

impl<S> Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let state = self.0.0.read().unwrap_or_else(|p| p.into_inner());
        Layer::<S>::on_new_span(&state.ours, attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let state = self.0.0.read().unwrap_or_else(|p| p.into_inner());
        Layer::<S>::on_record(&state.ours, id, values, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let state = self.0.0.read().unwrap_or_else(|p| p.into_inner());
        // Span data is stored per span by the `ours` layer; the postgres layer is the same type
        // and reads it the same way.
        let layer = if event.metadata().target() == POSTGRES_TARGET {
            &state.postgres
        } else {
            &state.ours
        };
        Layer::<S>::on_event(layer, event, ctx);
    }
}

fn build(
    identifier: &str,
    values: &BTreeMap<&'static str, String>,
) -> io::Result<(tracing_journald::Layer, tracing_journald::Layer)> {
    let one = |identifier: &str| -> io::Result<tracing_journald::Layer> {
        Ok(tracing_journald::layer()?
            // Our field names are chosen to read well as journal fields (CLUSTER_NAME, DB, ...);
            // the sanitiser strips leading underscores, so no field can pose as a trusted one.
            .with_field_prefix(None)
            .with_syslog_identifier(identifier.to_string())
            .with_priority_mappings(priorities())
            .with_custom_fields(values.iter().map(|(k, v)| (*k, v.as_bytes()))))
    };
    Ok((one(identifier)?, one(POSTGRES_TARGET)?))
}

/// syslog's meaning of the levels: routine information is 6, not the crate's default 5
/// ("notice"), so `journalctl -p notice` shows warnings and up without our chatter.
fn priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}
