//! CollectorPipeline status: whether every collector it names runs it, and if not, why.
//! The collectors' own reconcile renders the pipelines into their config; this one only
//! reads the collectors and writes the pipeline's status.

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};

use super::context::Context;
use crate::api::{CollectorPipeline, CollectorPipelineStatus, OtlpCollector};
use crate::resources::configmap;
use crate::{Error, FIELD_MANAGER, Result, status};

/// The condition this controller owns.
pub const ACCEPTED: &str = "Accepted";

#[instrument(skip(p, ctx), fields(namespace = %p.namespace().unwrap_or_default(), name = %p.name_any()))]
pub async fn reconcile(p: Arc<CollectorPipeline>, ctx: Arc<Context>) -> Result<Action> {
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = p.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<OtlpCollector> = Api::namespaced(ctx.client.clone(), &ns);
    let mut collectors = Vec::new();
    for name in &p.spec.collectors {
        collectors.push((name.clone(), api.get_opt(name).await?));
    }
    // `compute` keeps the transition time of a condition that did not flip: equal means unchanged.
    let st = compute(&p, &collectors, Timestamp::now());
    if p.status.as_ref() != Some(&st) {
        let body = serde_json::json!({
            "apiVersion": CollectorPipeline::api_version(&()),
            "kind": CollectorPipeline::kind(&()),
            "status": st,
        });
        let pipelines: Api<CollectorPipeline> = Api::namespaced(ctx.client.clone(), &ns);
        pipelines.patch_status(&p.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    }
    ctx.reset_backoff(&key(&p));
    // Changes of the pipeline or of a collector it names wake this up.
    Ok(Action::await_change())
}

/// The status for `p`, given the collectors it names (`None`: not found). Pure.
pub fn compute(
    p: &CollectorPipeline,
    collectors: &[(String, Option<OtlpCollector>)],
    now: Timestamp,
) -> CollectorPipelineStatus {
    let ns = p.namespace().unwrap_or_default();
    let mut rendered = Vec::new();
    let mut problems: Vec<(&str, String)> = Vec::new();
    for (name, cr) in collectors {
        let Some(cr) = cr else {
            problems.push(("CollectorNotFound", format!("no OtlpCollector `{name}` in namespace `{ns}`")));
            continue;
        };
        match configmap::render(cr, &[], None) {
            Err(e) => problems.push(("CollectorInvalid", format!("OtlpCollector `{name}`: {e}"))),
            Ok(base) => match configmap::add_pipeline(&base, p) {
                Ok(_) => rendered.push(name.clone()),
                Err(e) => problems.push((
                    "InvalidPipeline",
                    format!("OtlpCollector `{name}` refuses it (and keeps the last version it accepted, if any): {e}"),
                )),
            },
        }
    }
    let (status, reason, message) = match problems.first() {
        None => ("True", "Rendered", format!("in the config of {}", rendered.join(", "))),
        Some((reason, _)) => {
            let all: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            ("False", *reason, all.join("; "))
        }
    };
    let accepted = Condition {
        type_: ACCEPTED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: p.metadata.generation,
        last_transition_time: Time(now),
    };
    let old = p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    CollectorPipelineStatus {
        observed_generation: p.metadata.generation,
        conditions: status::keep_transition_times(old, vec![accepted]),
        collectors: rendered,
    }
}

pub fn error_policy(p: Arc<CollectorPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key(&p);
    let delay = ctx.backoff(&key);
    warn!(error = %error, object = %key, retry_in = ?delay, "pipeline status failed");
    Action::requeue(delay)
}

/// The backoff key: pipelines and collectors share the context's table.
fn key(p: &CollectorPipeline) -> String {
    format!("pipeline {}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

/// Watches CollectorPipelines, and OtlpCollectors for the pipelines that name them.
pub async fn controller(client: Client, namespace: Option<&str>, ctx: Arc<Context>, stop: CancellationToken) {
    let (pipelines, collectors): (Api<CollectorPipeline>, Api<OtlpCollector>) = match namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller = Controller::new(pipelines, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(collectors, watcher::Config::default(), move |cr: OtlpCollector| {
            let (ns, name) = (cr.namespace(), cr.name_any());
            store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && p.spec.collectors.contains(&name))
                .map(|p| ObjectRef::from_obj(&*p))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "pipeline reconcile error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ExporterSpec;

    fn shop(exporter: &str) -> CollectorPipeline {
        let mut p: CollectorPipeline = serde_norway::from_str(&format!(
            "apiVersion: otlpfleet.dev/v1alpha1\nkind: CollectorPipeline\nmetadata: {{name: shop, namespace: telemetry, generation: 2}}\nspec:\n  collectors: [edge, core]\n  signals: [traces]\n  exporters: [{exporter}]\n"
        ))
        .unwrap();
        p.metadata.generation = Some(2);
        p
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_900_000_000 + s).unwrap()
    }

    fn core() -> OtlpCollector {
        let mut cr = OtlpCollector::test();
        cr.metadata.name = Some("core".into());
        cr
    }

    #[test]
    fn accepted_names_the_collectors_that_run_it() {
        let found = [("edge".to_owned(), Some(OtlpCollector::test())), ("core".to_owned(), Some(core()))];
        let st = compute(&shop("{otlp: {endpoint: 'http://tempo:4317'}}"), &found, at(0));
        let c = &st.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str(), c.reason.as_str()), (ACCEPTED, "True", "Rendered"));
        assert_eq!(c.message, "in the config of edge, core");
        assert_eq!(
            (st.collectors, st.observed_generation, c.observed_generation),
            (vec!["edge".into(), "core".into()], Some(2), Some(2))
        );
    }

    #[test]
    fn a_missing_collector_and_an_invalid_pipeline_say_what_to_fix() {
        let found = [("edge".to_owned(), Some(OtlpCollector::test())), ("core".to_owned(), None)];
        let st = compute(&shop("{otlp: {endpoint: 'http://tempo:4317'}}"), &found, at(0));
        let c = &st.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "CollectorNotFound"));
        assert_eq!(c.message, "no OtlpCollector `core` in namespace `telemetry`");
        assert_eq!(st.collectors, ["edge"], "edge runs it all the same");

        let found = [("edge".to_owned(), Some(OtlpCollector::test()))];
        let st = compute(&shop("{otlp: {endpoint: 'tempo:4317'}}"), &found, at(0));
        let c = &st.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "InvalidPipeline"));
        assert!(
            c.message.contains(
                "refuses it (and keeps the last version it accepted, if any): exporters.otlp/shop-0.endpoint"
            ),
            "{}",
            c.message
        );
        assert!(st.collectors.is_empty());

        let mut broken = OtlpCollector::test();
        broken.spec.exporter = Some(ExporterSpec { endpoint: "tempo".into(), headers: Default::default() });
        let st = compute(&shop("{nop: {}}"), &[("edge".to_owned(), Some(broken))], at(0));
        assert_eq!(st.conditions[0].reason, "CollectorInvalid");
    }

    #[test]
    fn the_transition_time_moves_only_when_accepted_flips() {
        let found = [("edge".to_owned(), Some(OtlpCollector::test()))];
        let mut p = shop("{nop: {}}");
        p.status = Some(compute(&p, &found, at(0)));
        let again = compute(&p, &found, at(60));
        assert_eq!(Some(&again), p.status.as_ref(), "nothing changed: the status is not rewritten");
        let flipped = compute(&p, &[("edge".to_owned(), None)], at(120));
        assert_eq!(flipped.conditions[0].last_transition_time, Time(at(120)));
    }
}
