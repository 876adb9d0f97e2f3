//! observe → desire (pure) → apply (SSA) + prune → status (pure) → write status if it changed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt as _, predicates, reflector, watcher};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use super::context::{Context, RunConfig};
use crate::api::{CollectorPipeline, OtlpCollector, OtlpCollectorStatus, TlsMode};
use crate::leader::LeaderElector;
use crate::metrics::Metrics;
use crate::resources::secret::{Issued, now_seconds};
use crate::resources::{self, Desired, Observed, configmap, labels};
use crate::status::{self, Outcome};
use crate::{Error, FIELD_MANAGER, Result, apply};

/// Reconcile again after this long even without a change (drift repair).
const RESYNC: Duration = Duration::from_secs(300);

#[instrument(skip(cr, ctx), fields(namespace = %cr.namespace().unwrap_or_default(), name = %cr.name_any(), generation = ?cr.metadata.generation))]
pub async fn reconcile(cr: Arc<OtlpCollector>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile();
    if cr.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let ns = cr.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let uid = cr.uid().ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let client = &ctx.client;

    // 1 observe
    let observed = observe(client, &cr, &ns).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let existing = deployments.get_opt(&labels::collector(&cr)).await?;
    let now = now_seconds();

    // 2 desire
    let desired = match resources::desired(&cr, &observed, now) {
        Ok(d) => d,
        Err(Error::Spec(e)) => {
            warn!(error = %e, "invalid spec: the running fleet is left as it is");
            let st = status::compute(&cr, existing.as_ref(), &Outcome::Invalid(&e), now);
            let flipped = !cr.status.as_ref().is_some_and(|s| status::same_ignoring_timestamps(s, &st));
            write_status(client, &cr, &st).await?;
            if flipped {
                publish(&ctx, &cr, EventType::Warning, "InvalidSpec", "Validate", e.to_string()).await;
            }
            return Err(Error::Spec(e));
        }
        Err(e) => return Err(e),
    };

    // 3 apply + prune
    let deployment = match apply_all(client, &cr, &ns, &uid, &desired).await {
        Ok((deployment, pruned)) => {
            if !pruned.is_empty() {
                publish(&ctx, &cr, EventType::Normal, "Pruned", "Prune", format!("removed {}", pruned.join(", ")))
                    .await;
            }
            deployment
        }
        Err(e) => {
            let msg = e.to_string();
            let st = status::compute(&cr, existing.as_ref(), &Outcome::Failed(&msg), now);
            if let Err(se) = write_status(client, &cr, &st).await {
                warn!(error = %se, "writing the failure status");
            }
            publish(&ctx, &cr, EventType::Warning, "ReconcileFailed", "Apply", msg).await;
            return Err(e);
        }
    };
    if existing.is_none() {
        publish(
            &ctx,
            &cr,
            EventType::Normal,
            "Created",
            "Apply",
            format!("created the collector fleet {}", labels::collector(&cr)),
        )
        .await;
    }
    if let (Some(why), Some(cert)) = (&desired.certificate_issued, &desired.certificate) {
        let (reason, note) = match why {
            Issued::First => ("CertificateIssued", "issued"),
            Issued::Renewal => ("CertificateRotated", "renewed"),
            Issued::Changed => ("CertificateRotated", "re-issued for changed names, validity or CA"),
        };
        let note = format!("serving certificate {note}; valid until {}", cert.not_after.0);
        publish(&ctx, &cr, EventType::Normal, reason, "IssueCertificate", note).await;
    }

    // 4 status, 5 write if changed
    let st = status::compute(&cr, Some(&deployment), &Outcome::Applied(&desired), now);
    if !cr.status.as_ref().is_some_and(|s| status::same_ignoring_timestamps(s, &st)) {
        write_status(client, &cr, &st).await?;
    }
    ctx.reset_backoff(&key(&cr));

    // Wake up for the certificate's renewal moment.
    let requeue = desired
        .certificate
        .as_ref()
        .map(|c| Duration::from_secs(u64::try_from(c.renew_at.0.as_second() - now.as_second()).unwrap_or(0).max(1)))
        .map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(requeue))
}

/// A spec error waits for the next spec change; everything else is retried with backoff.
pub fn error_policy(cr: Arc<OtlpCollector>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.metric_label());
    match error {
        Error::Spec(e) if e.awaits_spec_change() => Action::await_change(),
        _ => {
            let delay = ctx.backoff(&key(&cr));
            warn!(error = %error, object = %key(&cr), retry_in = ?delay, "reconcile failed");
            Action::requeue(delay)
        }
    }
}

fn key(cr: &OtlpCollector) -> String {
    format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any())
}

async fn observe(client: &Client, cr: &OtlpCollector, ns: &str) -> Result<Observed> {
    let name = cr.name_any();
    let pipelines: Api<CollectorPipeline> = Api::namespaced(client.clone(), ns);
    let pipelines = pipelines
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.collectors.contains(&name))
        .collect();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let running = config_maps.get_opt(&labels::collector(cr)).await?.and_then(|cm| {
        let yaml = cm.data?.remove(configmap::CONFIG_KEY)?;
        otlp_collector::config::Config::from_yaml(&yaml).ok()
    });
    if cr.spec.tls.mode == TlsMode::Disabled {
        return Ok(Observed { pipelines, running, ..Observed::default() });
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let tls = &cr.spec.tls;
    let issuer = tls.issuer.as_ref().and_then(|i| i.secret_name.as_deref());
    let client_ca = tls.client_ca.as_ref().map(|c| c.secret_name.as_str());
    Ok(Observed {
        ca_secret: if issuer.is_none() { secrets.get_opt(&labels::ca_secret(cr)).await? } else { None },
        tls_secret: secrets.get_opt(&labels::tls_secret(cr)).await?,
        issuer_secret: match issuer {
            Some(name) => secrets.get_opt(name).await?,
            None => None,
        },
        client_ca_secret: match client_ca {
            Some(name) => secrets.get_opt(name).await?,
            None => None,
        },
        pipelines,
        running,
    })
}

/// Applies every desired child, then prunes what no longer belongs. Returns the applied
/// Deployment (with its status) and what was pruned.
async fn apply_all(
    client: &Client,
    cr: &OtlpCollector,
    ns: &str,
    uid: &str,
    d: &Desired,
) -> Result<(Deployment, Vec<String>)> {
    // Secrets and config first, so new pods find them.
    for secret in &d.secrets {
        apply::apply(client, secret).await?;
    }
    apply::apply(client, &d.config_map).await?;
    apply::apply(client, &d.service).await?;
    apply::apply(client, &d.headless).await?;
    let deployment = apply::apply(client, &d.deployment).await?;
    if let Some(hpa) = &d.hpa {
        apply::apply(client, hpa).await?;
    }
    if let Some(pdb) = &d.pdb {
        apply::apply(client, pdb).await?;
    }

    let sel = labels::owned_selector_string(cr);
    let name = |o: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| o.name.clone().unwrap_or_default();
    let secret_names: Vec<String> = d.secrets.iter().map(|s| name(&s.metadata)).collect();
    let secret_keep: Vec<&str> = secret_names.iter().map(String::as_str).collect();
    let one = |n: String| vec![n];
    let hpa_keep = d.hpa.as_ref().map(|h| one(name(&h.metadata))).unwrap_or_default();
    let pdb_keep = d.pdb.as_ref().map(|p| one(name(&p.metadata))).unwrap_or_default();
    let svc_keep = [name(&d.service.metadata), name(&d.headless.metadata)];
    let mut pruned = Vec::new();
    pruned.extend(apply::prune::<Secret>(client, ns, &sel, uid, &secret_keep).await?);
    pruned.extend(apply::prune::<HorizontalPodAutoscaler>(client, ns, &sel, uid, &as_strs(&hpa_keep)).await?);
    pruned.extend(apply::prune::<PodDisruptionBudget>(client, ns, &sel, uid, &as_strs(&pdb_keep)).await?);
    pruned.extend(apply::prune::<Service>(client, ns, &sel, uid, &as_strs(&svc_keep)).await?);
    pruned.extend(apply::prune::<ConfigMap>(client, ns, &sel, uid, &[name(&d.config_map.metadata).as_str()]).await?);
    pruned.extend(apply::prune::<Deployment>(client, ns, &sel, uid, &[name(&d.deployment.metadata).as_str()]).await?);
    if !pruned.is_empty() {
        info!(pruned = ?pruned, "pruned children that no longer belong");
    }
    Ok((deployment, pruned))
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Server-side applies the status subresource with the operator's field manager.
async fn write_status(client: &Client, cr: &OtlpCollector, st: &OtlpCollectorStatus) -> Result<()> {
    let ns = cr.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<OtlpCollector> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": OtlpCollector::api_version(&()),
        "kind": OtlpCollector::kind(&()),
        "status": st,
    });
    api.patch_status(&cr.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

async fn publish(ctx: &Context, cr: &OtlpCollector, type_: EventType, reason: &str, action: &str, note: String) {
    let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
    if let Err(e) = ctx.recorder.publish(&event, &cr.object_ref(&())).await {
        warn!(error = %e, reason, "publishing an event");
    }
}

/// Runs one operator instance until `shutdown` or until it loses the Lease (an error: the
/// process should exit so it cannot act as a second leader). Waits to be leader first.
pub async fn run(client: Client, config: RunConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Result<()> {
    let elector = LeaderElector::new(client.clone(), config.lease.clone());
    info!(identity = elector.identity(), lease = %config.lease.name, "waiting to become leader");
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => warn!(error = %e, "leader election"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(config.lease.renew_period()) => {}
        }
    }
    info!(identity = elector.identity(), "became leader");
    metrics.leader.set(1);
    let ctx = Arc::new(Context::new(client.clone(), elector.identity(), metrics.clone()));
    let stop = CancellationToken::new();
    let controller = controller(client, config.namespace.as_deref(), ctx.clone(), stop.clone());
    let keep_lease = async {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(config.lease.renew_period()).await;
            match elector.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return Error::LostLease(config.lease.name.clone()),
                Err(e) => warn!(error = %e, "renewing the leader lease"),
            }
            if last_renewed.elapsed() > config.lease.renew_deadline() {
                return Error::LostLease(config.lease.name.clone());
            }
        }
    };
    let pipelines = super::collector_pipeline::controller(
        ctx.client.clone(),
        config.namespace.as_deref(),
        ctx.clone(),
        stop.clone(),
    );
    let controllers = futures::future::join(controller, pipelines);
    let result = tokio::select! {
        _ = controllers => Ok(()),
        e = keep_lease => Err(e),
        _ = shutdown.cancelled() => Ok(()),
    };
    stop.cancel();
    metrics.leader.set(0);
    match &result {
        Ok(()) => {
            if let Err(e) = elector.release().await {
                warn!(error = %e, "releasing the leader lease");
            }
            info!("stopped");
        }
        Err(e) => warn!(error = %e, "stopped leading"),
    }
    result
}

async fn controller(client: Client, namespace: Option<&str>, ctx: Arc<Context>, stop: CancellationToken) {
    let crs: Api<OtlpCollector> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    fn children<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let (reader, writer) = reflector::store();
    // Status writes do not bump the generation, so they do not trigger a reconcile.
    let trigger = watcher(crs, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    Controller::for_stream(trigger, reader)
        .owns(children::<Deployment>(&client, namespace), owned.clone())
        .owns(children::<Service>(&client, namespace), owned.clone())
        .owns(children::<ConfigMap>(&client, namespace), owned.clone())
        .owns(children::<Secret>(&client, namespace), owned.clone())
        .owns(children::<HorizontalPodAutoscaler>(&client, namespace), owned.clone())
        .owns(children::<PodDisruptionBudget>(&client, namespace), owned)
        // A pipeline's change or deletion re-renders the config of every collector it names.
        .watches(children::<CollectorPipeline>(&client, namespace), watcher::Config::default(), |p| {
            let ns = p.namespace();
            p.spec
                .collectors
                .iter()
                .map(|c| ObjectRef::new(c).within(ns.as_deref().unwrap_or_default()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile error"),
            }
        })
        .await;
}

/// `/metrics` and `/healthz` on `addr`, until `shutdown`.
pub async fn serve_http(addr: SocketAddr, metrics: Arc<Metrics>, shutdown: CancellationToken) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "serving /metrics and /healthz");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
