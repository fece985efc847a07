// Adam with decoupled weight decay (AdamW), one fused update per parameter:
//   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//   p -= lr * (m/bc1) / (sqrt(v/bc2) + eps),  bc1 = 1 - b1^t, bc2 = 1 - b2^t (from the host).

#include "lib/optimizer.wgsl"

struct Params {
    len: u32, lr: f32, beta1: f32, beta2: f32,
    eps: f32, weight_decay: f32, bias_correction1: f32, bias_correction2: f32,
}

@group(0) @binding(0) var<uniform> prm: Params;
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = parameter_index(wg, nwg, lid);
    if (i >= prm.len) {
        return;
    }
    let g = grad[i];
    let m = prm.beta1 * moment1[i] + (1.0 - prm.beta1) * g;
    let v = prm.beta2 * moment2[i] + (1.0 - prm.beta2) * g * g;
    moment1[i] = m;
    moment2[i] = v;
    let p = param[i] * (1.0 - prm.lr * prm.weight_decay);
    param[i] = p - prm.lr * (m / prm.bias_correction1) / (sqrt(v / prm.bias_correction2) + prm.eps);
}
