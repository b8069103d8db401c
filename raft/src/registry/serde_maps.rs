//! Serde shapes for the registry's maps: formats such as JSON only allow string keys.

/// Serializes a map keyed by [`ModelRef`] as a sequence of `[key, value]` pairs: formats
/// such as JSON only allow string map keys.
pub(super) mod model_keyed {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::registry::ModelRef;

    pub fn serialize<S: Serializer, V: Serialize>(
        map: &BTreeMap<ModelRef, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<BTreeMap<ModelRef, V>, D::Error> {
        Ok(Vec::<(ModelRef, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// `Registry::failed`: the outer map (integer keys) as a map, each inner map as pairs.
pub(super) mod failed_by_node {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::registry::ModelRef;
    use crate::types::NodeId;

    #[derive(Serialize)]
    struct Ser<'a>(#[serde(with = "super::model_keyed")] &'a BTreeMap<ModelRef, String>);

    #[derive(Deserialize)]
    struct De(#[serde(with = "super::model_keyed")] BTreeMap<ModelRef, String>);

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<NodeId, BTreeMap<ModelRef, String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(n, f)| (n, Ser(f))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<NodeId, BTreeMap<ModelRef, String>>, D::Error> {
        let map = BTreeMap::<NodeId, De>::deserialize(d)?;
        Ok(map.into_iter().map(|(n, De(f))| (n, f)).collect())
    }
}
