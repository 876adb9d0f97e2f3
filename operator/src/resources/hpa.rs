//! The HorizontalPodAutoscaler (targets the OtlpCollector's scale subresource) and the PodDisruptionBudget.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource as _, ResourceExt as _};

use super::{child_meta, labels};
use crate::Result;
use crate::api::OtlpCollector;

/// `None` when autoscaling is unset (and then pruned).
pub fn hpa(cr: &OtlpCollector) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(a) = &cr.spec.autoscaling else { return Ok(None) };
    let metric = |name: &str, target: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: name.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(target),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let metrics = [("cpu", a.target_cpu_utilization), ("memory", a.target_memory_utilization)]
        .into_iter()
        .filter_map(|(name, target)| target.map(|t| metric(name, t)))
        .collect();
    Ok(Some(HorizontalPodAutoscaler {
        metadata: child_meta(cr, labels::collector(cr), "autoscaler")?,
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(OtlpCollector::api_version(&()).into_owned()),
                kind: OtlpCollector::kind(&()).into_owned(),
                name: cr.name_any(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: a.behavior.clone(),
        },
        ..Default::default()
    }))
}

/// A PDB (at most one pod voluntarily disrupted at a time) when the fleet has more than one pod:
/// `replicas > 1`, or with autoscaling `minReplicas > 1` (so HPA moves do not add and remove it).
pub fn pdb(cr: &OtlpCollector) -> Result<Option<PodDisruptionBudget>> {
    let floor = match &cr.spec.autoscaling {
        Some(a) => a.min_replicas,
        None => cr.spec.replicas,
    };
    if floor <= 1 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: child_meta(cr, labels::collector(cr), "disruption-budget")?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(labels::selector(cr)), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
