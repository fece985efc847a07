// Adadelta (Keras 2 form), one fused elementwise update per parameter:
//   a = rho*a + (1-rho)*g^2;  u = g*sqrt(d + eps)/sqrt(a + eps);  p -= lr*u;  d = rho*d + (1-rho)*u^2.

#include "lib/optimizer.wgsl"

struct Params {
    len: u32, lr: f32, rho: f32, eps: f32,
}

@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(3) var<storage, read_write> accum_grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> accum_update: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = parameter_index(wg, nwg, lid);
    if (i >= prm.len) {
        return;
    }
    let g = grad[i];
    let a = prm.rho * accum_grad[i] + (1.0 - prm.rho) * g * g;
    let d = accum_update[i];
    let u = g * sqrt(d + prm.eps) / sqrt(a + prm.eps);
    param[i] = param[i] - prm.lr * u;
    accum_grad[i] = a;
    accum_update[i] = prm.rho * d + (1.0 - prm.rho) * u * u;
}
