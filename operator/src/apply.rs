//! Server-side apply with the operator's one field manager, and pruning of children that no
//! longer belong (stackable `cluster_resources.rs` style: labelled, owned, not desired → deleted).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, FIELD_MANAGER, Result};

/// Applies `obj` (force: the operator owns every field it sets) and returns the stored object.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let ns = obj.meta().namespace.as_deref().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = obj.meta().name.as_deref().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut body = serde_json::to_value(obj).map_err(|source| Error::Serialize { what: "child object", source })?;
    body["apiVersion"] = K::api_version(&()).into_owned().into();
    body["kind"] = K::kind(&()).into_owned().into();
    Ok(api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?)
}

/// Deletes the objects of kind `K` in `ns` that match `selector`, are controlled by `owner_uid`
/// and are not named in `keep`. Returns what it deleted, as `Kind/name`.
pub async fn prune<K>(client: &Client, ns: &str, selector: &str, owner_uid: &str, keep: &[&str]) -> Result<Vec<String>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut deleted = Vec::new();
    for obj in api.list_metadata(&ListParams::default().labels(selector)).await? {
        let name = obj.name_any();
        let owned = obj.owner_references().iter().any(|o| o.uid == owner_uid && o.controller == Some(true));
        if owned && !keep.contains(&name.as_str()) && obj.metadata.deletion_timestamp.is_none() {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(format!("{}/{name}", K::kind(&()))),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(deleted)
}
