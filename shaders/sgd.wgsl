// SGD with momentum, weight decay and Nesterov (PyTorch semantics), one fused update per parameter:
//   g += wd*p;  v = momentum*v + g;  p -= lr*(nesterov ? g + momentum*v : v).
// Without momentum the velocity buffer is a placeholder and is never touched.

#include "lib/optimizer.wgsl"

struct Params {
    len: u32, lr: f32, momentum: f32, weight_decay: f32,
    nesterov: u32, use_velocity: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(3) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = parameter_index(wg, nwg, lid);
    if (i >= prm.len) {
        return;
    }
    let p = param[i];
    let g = grad[i] + prm.weight_decay * p;
    var step = g;
    if (prm.use_velocity != 0u) {
        let v = prm.momentum * velocity[i] + g;
        velocity[i] = v;
        step = v;
        if (prm.nesterov != 0u) {
            step = g + prm.momentum * v;
        }
    }
    param[i] = p - prm.lr * step;
}
