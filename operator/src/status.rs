//! Pure status maths: conditions from what was built and observed; `lastTransitionTime` moves
//! only when a condition's status flips.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{OtlpCollector, OtlpCollectorStatus, Phase, TlsMode};
use crate::resources::configmap::PipelineReport;
use crate::resources::{self, Desired, SpecError, labels};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const CERTIFICATE_READY: &str = "CertificateReady";
pub const CONFIG_VALID: &str = "ConfigValid";
pub const PIPELINES_READY: &str = "PipelinesReady";

/// How the reconcile went.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Every child was applied.
    Applied(&'a Desired),
    /// The spec cannot be applied; the running fleet was left as it was.
    Invalid(&'a SpecError),
    /// Applying failed (transient); retried with backoff.
    Failed(&'a str),
}

/// The status for `cr`, given the Deployment as last seen and the outcome. Timestamps of
/// conditions whose status did not flip are kept from the current status.
pub fn compute(
    cr: &OtlpCollector,
    deployment: Option<&Deployment>,
    outcome: &Outcome<'_>,
    now: Timestamp,
) -> OtlpCollectorStatus {
    let old = cr.status.clone().unwrap_or_default();
    let generation = cr.metadata.generation;
    let cond = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    };

    let (desired_replicas, ready, pods, rolled_out) = match deployment {
        Some(d) => {
            let want = d.spec.replicas.unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            let current = st.observed_generation >= d.metadata.generation;
            let rolled = current && st.updated_replicas.unwrap_or(0) >= want && st.replicas.unwrap_or(0) <= want;
            (want, st.ready_replicas.unwrap_or(0), st.replicas.unwrap_or(0), rolled)
        }
        None => (resources::replicas(cr), 0, 0, false),
    };
    let all_ready = deployment.is_some() && ready >= desired_replicas;

    let mut conditions = Vec::new();
    conditions.push(cond(
        READY,
        all_ready,
        if all_ready { "AllReplicasReady" } else { "ReplicasNotReady" },
        format!("{ready}/{desired_replicas} collector pods ready"),
    ));
    let progressing = !(rolled_out && all_ready);
    conditions.push(cond(
        PROGRESSING,
        progressing,
        if deployment.is_none() {
            "Creating"
        } else if progressing {
            "RollingOut"
        } else {
            "Stable"
        },
        if progressing {
            "waiting for the Deployment to roll out".into()
        } else {
            "the Deployment is rolled out".into()
        },
    ));
    match outcome {
        Outcome::Applied(_) => conditions.push(cond(DEGRADED, false, "AsExpected", "every child is applied".into())),
        Outcome::Invalid(e) => conditions.push(cond(DEGRADED, true, e.reason(), e.to_string())),
        Outcome::Failed(msg) => conditions.push(cond(DEGRADED, true, "ReconcileError", (*msg).to_owned())),
    }
    let config = match outcome {
        Outcome::Invalid(e @ (SpecError::InvalidConfig(_) | SpecError::Duration { .. })) => {
            Some(cond(CONFIG_VALID, false, e.reason(), e.to_string()))
        }
        Outcome::Applied(_) => Some(cond(CONFIG_VALID, true, "Valid", "the collector config passed validation".into())),
        _ => None,
    };
    conditions.extend(config.or_else(|| old_condition(&old, CONFIG_VALID)));
    let certificate = match outcome {
        Outcome::Applied(d) => d.certificate.clone(),
        _ => old.certificate.clone(),
    };
    let cert_condition = match (cr.spec.tls.mode, outcome) {
        (TlsMode::Disabled, _) => Some(cond(CERTIFICATE_READY, true, "TLSDisabled", "TLS is disabled".into())),
        (_, Outcome::Invalid(e @ SpecError::Secret { .. })) => {
            Some(cond(CERTIFICATE_READY, false, e.reason(), e.to_string()))
        }
        (_, Outcome::Applied(Desired { certificate: Some(c), .. })) => Some(cond(
            CERTIFICATE_READY,
            true,
            "Issued",
            format!(
                "serving certificate in Secret {} valid until {}, renewed at {}",
                c.secret_name, c.not_after.0, c.renew_at.0
            ),
        )),
        _ => None,
    };
    conditions.extend(cert_condition.or_else(|| old_condition(&old, CERTIFICATE_READY)));
    let pipelines = match outcome {
        Outcome::Applied(d) => Some(pipelines_condition(&d.pipelines, cond)),
        _ => None,
    };
    conditions.extend(pipelines.or_else(|| old_condition(&old, PIPELINES_READY)));

    let degraded = conditions.iter().any(|c| c.type_ == DEGRADED && c.status == "True");
    let phase = if degraded {
        Phase::Degraded
    } else if all_ready {
        Phase::Running
    } else {
        Phase::Pending
    };
    OtlpCollectorStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions: keep_transition_times(&old.conditions, conditions),
        replicas: pods,
        ready_replicas: ready,
        ready: Some(format!("{ready}/{desired_replicas}")),
        selector: Some(labels::selector_string(cr)),
        version: Some(match outcome {
            Outcome::Applied(d) => d.version.clone(),
            _ => old.version.clone().unwrap_or_else(|| resources::version(cr)),
        }),
        certificate,
    }
}

/// PipelinesReady: False while the collector refuses a CollectorPipeline that names it.
fn pipelines_condition(report: &PipelineReport, cond: impl Fn(&str, bool, &str, String) -> Condition) -> Condition {
    let PipelineReport { rendered, kept, left_out } = report;
    if kept.is_empty() && left_out.is_empty() {
        let message = if rendered.is_empty() {
            "no CollectorPipeline names this collector".to_owned()
        } else {
            format!("rendered: {}", rendered.join(", "))
        };
        return cond(PIPELINES_READY, true, "AllRendered", message);
    }
    let mut parts = Vec::new();
    if !kept.is_empty() {
        parts.push(format!("refused, running their last accepted version: {}", kept.join(", ")));
    }
    if !left_out.is_empty() {
        parts.push(format!("refused and left out: {}", left_out.join(", ")));
    }
    if !rendered.is_empty() {
        parts.push(format!("rendered: {}", rendered.join(", ")));
    }
    parts.push("kubectl get otlpp says why".to_owned());
    cond(PIPELINES_READY, false, "PipelineRefused", parts.join("; "))
}

fn old_condition(old: &OtlpCollectorStatus, type_: &str) -> Option<Condition> {
    old.conditions.iter().find(|c| c.type_ == type_).cloned()
}

/// Each new condition keeps the old `lastTransitionTime` unless its status flipped.
pub fn keep_transition_times(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            if let Some(prev) = old.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
                c.last_transition_time = prev.last_transition_time.clone();
            }
            c
        })
        .collect()
}

/// Equal apart from condition timestamps: a status write is skipped then.
pub fn same_ignoring_timestamps(a: &OtlpCollectorStatus, b: &OtlpCollectorStatus) -> bool {
    let strip = |s: &OtlpCollectorStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    use super::*;
    use crate::resources::{Observed, desired};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_900_000_000 + s).unwrap()
    }

    fn deployment(want: i32, ready: i32) -> Deployment {
        let mut d =
            Deployment { spec: DeploymentSpec { replicas: Some(want), ..Default::default() }, ..Default::default() };
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(want),
            updated_replicas: Some(want),
            ready_replicas: Some(ready),
            ..Default::default()
        });
        d
    }

    fn get<'a>(s: &'a OtlpCollectorStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn pipelines_ready_says_which_pipelines_the_collector_refused() {
        let cr = OtlpCollector::test();
        let mut d = desired(&cr, &Observed::default(), t(0)).unwrap();
        let s = compute(&cr, Some(&deployment(1, 1)), &Outcome::Applied(&d), t(0));
        let c = get(&s, PIPELINES_READY);
        assert_eq!((c.status.as_str(), c.message.as_str()), ("True", "no CollectorPipeline names this collector"));
        d.pipelines =
            PipelineReport { rendered: vec!["shop".into()], kept: vec!["ads".into()], left_out: vec!["new".into()] };
        let s = compute(&cr, Some(&deployment(1, 1)), &Outcome::Applied(&d), t(0));
        let c = get(&s, PIPELINES_READY);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "PipelineRefused"));
        assert_eq!(
            c.message,
            "refused, running their last accepted version: ads; refused and left out: new; rendered: shop; kubectl get otlpp says why"
        );
        assert_eq!(s.phase, Some(Phase::Running), "a refused pipeline does not degrade the fleet");
    }

    #[test]
    fn ready_follows_the_deployment_and_the_columns_read_2_of_2() {
        let cr = OtlpCollector::test().with_replicas(2).with_mtls();
        let d = desired(&cr, &Observed::default(), t(0)).unwrap();
        let s = compute(&cr, Some(&deployment(2, 1)), &Outcome::Applied(&d), t(0));
        assert_eq!((s.ready.as_deref(), s.phase), (Some("1/2"), Some(Phase::Pending)));
        assert_eq!(get(&s, READY).status, "False");
        assert_eq!(get(&s, PROGRESSING).status, "True");
        let s = compute(&cr, Some(&deployment(2, 2)), &Outcome::Applied(&d), t(0));
        assert_eq!((s.ready.as_deref(), s.phase), (Some("2/2"), Some(Phase::Running)));
        assert_eq!((s.replicas, s.ready_replicas), (2, 2));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=edge,app.kubernetes.io/name=otlp-collector")
        );
        assert_eq!(get(&s, CERTIFICATE_READY).status, "True");
        assert_eq!(get(&s, CONFIG_VALID).status, "True");
        assert_eq!(get(&s, DEGRADED).status, "False");
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(1)));
        assert_eq!(s.certificate, d.certificate);
    }

    #[test]
    fn last_transition_time_moves_only_on_a_flip() {
        let mut cr = OtlpCollector::test().with_replicas(2);
        let d = desired(&cr, &Observed::default(), t(0)).unwrap();
        let first = compute(&cr, Some(&deployment(2, 1)), &Outcome::Applied(&d), t(0));
        cr.status = Some(first.clone());
        // Nothing flipped: timestamps stay, and the status counts as unchanged.
        let same = compute(&cr, Some(&deployment(2, 1)), &Outcome::Applied(&d), t(60));
        assert_eq!(get(&same, READY).last_transition_time, Time(t(0)));
        assert!(same_ignoring_timestamps(&first, &same));
        assert_eq!(same, first);
        // Ready flips: only Ready and Progressing move.
        let flipped = compute(&cr, Some(&deployment(2, 2)), &Outcome::Applied(&d), t(120));
        assert_eq!(get(&flipped, READY).last_transition_time, Time(t(120)));
        assert_eq!(get(&flipped, PROGRESSING).last_transition_time, Time(t(120)));
        assert_eq!(get(&flipped, DEGRADED).last_transition_time, Time(t(0)));
        assert!(!same_ignoring_timestamps(&first, &flipped));
    }

    #[test]
    fn an_invalid_spec_is_degraded_with_config_valid_false_and_keeps_the_fleet_facts() {
        let mut cr = OtlpCollector::test().with_replicas(2);
        let d = desired(&cr, &Observed::default(), t(0)).unwrap();
        cr.status = Some(compute(&cr, Some(&deployment(2, 2)), &Outcome::Applied(&d), t(0)));
        cr.spec.exporter = Some(crate::api::ExporterSpec { endpoint: "nope".into(), headers: Default::default() });
        let cr = cr.with_generation(2);
        let crate::Error::Spec(e) = desired(&cr, &Observed::default(), t(1)).unwrap_err() else { panic!() };
        let s = compute(&cr, Some(&deployment(2, 2)), &Outcome::Invalid(&e), t(1));
        assert_eq!(s.phase, Some(Phase::Degraded));
        assert_eq!(get(&s, DEGRADED).status, "True");
        assert_eq!(get(&s, CONFIG_VALID).reason, "InvalidConfig");
        assert!(get(&s, CONFIG_VALID).message.contains("exporters.otlp.endpoint"));
        assert_eq!(get(&s, READY).status, "True", "the running fleet is untouched");
        assert_eq!(s.observed_generation, Some(2));
    }
}
