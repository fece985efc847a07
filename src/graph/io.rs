//! Save and load: the architecture as readable, versioned JSON and the weights as safetensors
//! (one f32 tensor per weight, named `<layer id>.<weight>`, e.g. `3.kernel`, `5.running_var`).

use super::{Graph, HostTensor, Layer, LayerId, Op};
use crate::error::{Error, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Identifies the file kind, so that another JSON file is rejected with a clear message.
pub const FORMAT: &str = "netmorph.graph";
/// Version of the architecture format this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct GraphFile {
    format: String,
    version: u32,
    next_id: usize,
    /// Output class names (absent: unnamed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    class_names: Vec<String>,
    layers: Vec<LayerSpec>,
}

#[derive(Serialize, Deserialize)]
struct LayerSpec {
    id: LayerId,
    #[serde(flatten)]
    op: Op,
    #[serde(default)]
    inputs: Vec<LayerId>,
}

impl Graph {
    /// The architecture (no weights) as JSON, one layer per line.
    pub fn to_json(&self) -> String {
        let layers: Vec<String> = self
            .layers()
            .iter()
            .map(|l| serde_json::to_string(&LayerSpec { id: l.id, op: l.op.clone(), inputs: l.inputs.clone() }).expect("layers serialise"))
            .collect();
        let class_names = if self.class_names().is_empty() {
            String::new()
        } else {
            format!("  \"class_names\": {},\n", serde_json::to_string(self.class_names()).expect("strings serialise"))
        };
        format!(
            "{{\n  \"format\": \"{FORMAT}\",\n  \"version\": {VERSION},\n  \"next_id\": {},\n{class_names}  \"layers\": [\n    {}\n  ]\n}}\n",
            self.next_id(),
            layers.join(",\n    ")
        )
    }

    /// An architecture read from JSON, without weights (give it some with [`Graph::init_weights`]
    /// or [`Graph::load_weights`]). Checks the format, the version, the structure and the shapes.
    pub fn from_json(json: &str) -> Result<Graph> {
        from_json_at(json, Path::new("(json)"))
    }

    /// The weights as safetensors bytes.
    pub fn weights_to_safetensors(&self) -> Result<Vec<u8>> {
        let mut views = Vec::new();
        let params = self.params();
        for (id, name, t) in &params {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes).map_err(|e| Error::Other(format!("safetensors: {e}")))?;
            views.push((format!("{id}.{name}"), view));
        }
        let meta = HashMap::from([("format".to_string(), FORMAT.to_string()), ("version".to_string(), VERSION.to_string())]);
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Other(format!("safetensors: {e}")))
    }

    /// Replaces all weights with those in safetensors `bytes`, which must hold exactly the tensors
    /// the architecture calls for, with their shapes.
    pub fn load_weights(&mut self, bytes: &[u8]) -> Result<()> {
        self.load_weights_at(bytes, Path::new("(weights)"))
    }

    /// Writes the architecture to `json` and the weights to `weights`.
    pub fn save(&self, json: &Path, weights: &Path) -> Result<()> {
        self.validate()?;
        std::fs::write(json, self.to_json()).map_err(|e| Error::io(json, e))?;
        std::fs::write(weights, self.weights_to_safetensors()?).map_err(|e| Error::io(weights, e))
    }

    /// Reads an architecture (no weights) from a JSON file; errors name the file.
    pub fn load_architecture(json: &Path) -> Result<Graph> {
        let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
        from_json_at(&text, json)
    }

    /// Reads a graph saved with [`Graph::save`].
    pub fn load(json: &Path, weights: &Path) -> Result<Graph> {
        let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
        let mut graph = from_json_at(&text, json)?;
        let bytes = std::fs::read(weights).map_err(|e| Error::io(weights, e))?;
        graph.load_weights_at(&bytes, weights)?;
        Ok(graph)
    }

    fn load_weights_at(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
        let shapes = self.infer_shapes()?;
        let mut used = HashSet::new();
        let mut loaded: Vec<(LayerId, BTreeMap<String, HostTensor>)> = vec![];
        for layer in self.layers() {
            let mut params = BTreeMap::new();
            for spec in layer.op.param_specs(&self.input_shape_of(&shapes, layer.id)) {
                let key = format!("{}.{}", layer.id, spec.name);
                let view = st.tensor(&key).map_err(|_| {
                    Error::format(path, format!("missing tensor `{key}` {:?} for layer {} ({})", spec.shape, layer.id, layer.op))
                })?;
                if view.dtype() != Dtype::F32 {
                    return Err(Error::format(path, format!("tensor `{key}` is {:?}, expected F32", view.dtype())));
                }
                if view.shape() != spec.shape.as_slice() {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor `{key}` has shape {:?}, but layer {} ({}) needs {:?}",
                            view.shape(),
                            layer.id,
                            layer.op,
                            spec.shape
                        ),
                    ));
                }
                // The data may be unaligned inside the file: decode bytewise.
                let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                params.insert(spec.name.to_string(), HostTensor::new(spec.shape.clone(), data));
                used.insert(key);
            }
            loaded.push((layer.id, params));
        }
        if let Some(extra) = st.names().into_iter().find(|n| !used.contains(*n)) {
            return Err(Error::format(path, format!("tensor `{extra}` matches no weight of the architecture")));
        }
        for (id, params) in loaded {
            self.layer_mut(id).params = params;
        }
        Ok(())
    }
}

fn from_json_at(json: &str, path: &Path) -> Result<Graph> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))?;
    let format = value.get("format").and_then(|v| v.as_str());
    if format != Some(FORMAT) {
        return Err(Error::format(path, format!("not a {FORMAT} file (format field is {format:?})")));
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(VERSION as u64) {
        return Err(Error::format(path, format!("architecture version {version:?} is not supported (this build reads version {VERSION})")));
    }
    let file: GraphFile = serde_json::from_value(value).map_err(|e| Error::format(path, format!("invalid architecture: {e}")))?;
    if file.layers.is_empty() {
        return Err(Error::format(path, "the architecture has no layers"));
    }
    // Ids grow by one per new layer: a larger next id is corrupt, and would overflow on the next morph.
    if file.next_id > u32::MAX as usize {
        return Err(Error::format(path, format!("next_id {} is beyond any real graph (at most {})", file.next_id, u32::MAX)));
    }
    let layers: Vec<Layer> =
        file.layers.into_iter().map(|l| Layer { id: l.id, op: l.op, inputs: l.inputs, params: BTreeMap::new() }).collect();
    let mut graph = Graph::from_parts(layers, file.next_id);
    graph.validate_architecture().map_err(|e| Error::format(path, e.to_string()))?;
    graph.set_class_names(file.class_names).map_err(|e| Error::format(path, e.to_string()))?;
    Ok(graph)
}
