// Optimizer updates, element-wise and in place: torch.optim.SGD (momentum,
// no dampening, no Nesterov) and torch.optim.Adam (bias-corrected, not
// AMSGrad). Weight decay is L2: added to the gradient before the update.
// Also the running average of the weights training can validate instead of
// the weights themselves (`average_step`).

struct Params {
    n: u32,
    base_p: u32,
    base_g: u32,
    base_s1: u32,
    base_s2: u32,
    average_weight: f32, // average_step: the new weights' share
    _pad1: u32,
    _pad2: u32,
    lr: f32,
    weight_decay: f32,
    momentum: f32,       // SGD
    beta1: f32,          // Adam
    beta2: f32,
    eps: f32,
    step_size: f32,      // Adam: lr / (1 - beta1^t)
    bc2_sqrt: f32,       // Adam: sqrt(1 - beta2^t)
}

// The element the kernels update: f32 here; ops::optim builds the vec4 form
// of this module (`alias V = vec4<f32>;`, `n` and the bases counted in
// vec4s) for windows that start on 4 elements: the same arithmetic, lane by
// lane, a quarter of the loads and stores.
alias V = f32;

@group(0) @binding(0) var<storage, read_write> param: array<V>;
@group(0) @binding(1) var<storage, read> grad: array<V>;
@group(0) @binding(2) var<storage, read_write> s1: array<V>;
@group(0) @binding(3) var<storage, read_write> s2: array<V>;
@group(0) @binding(4) var<uniform> p: Params;

override WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

// Plain SGD (momentum 0): p -= lr * (g + wd p).
@compute @workgroup_size(WG)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let w = param[p.base_p + i];
    let d = grad[p.base_g + i] + p.weight_decay * w;
    param[p.base_p + i] = w - p.lr * d;
}

// SGD with momentum: buf = momentum buf + d (buf starts at 0, so the first
// step gives buf = d as in PyTorch); p -= lr buf.
@compute @workgroup_size(WG)
fn sgd_momentum_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let w = param[p.base_p + i];
    let d = grad[p.base_g + i] + p.weight_decay * w;
    let b = p.momentum * s1[p.base_s1 + i] + d;
    s1[p.base_s1 + i] = b;
    param[p.base_p + i] = w - p.lr * b;
}

// Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
@compute @workgroup_size(WG)
fn adam_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let w = param[p.base_p + i];
    let g = grad[p.base_g + i] + p.weight_decay * w;
    let m = p.beta1 * s1[p.base_s1 + i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * s2[p.base_s2 + i] + (1.0 - p.beta2) * g * g;
    s1[p.base_s1 + i] = m;
    s2[p.base_s2 + i] = v;
    param[p.base_p + i] = w - p.step_size * m / (sqrt(v) / p.bc2_sqrt + p.eps);
}

// Running average of the weights (an exponential moving average, as
// torch.optim.swa_utils.AveragedModel with an EMA rule): avg += w (p - avg),
// w = p.average_weight; `param` is only read, `s1` holds the average.
@compute @workgroup_size(WG)
fn average_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let a = s1[p.base_s1 + i];
    s1[p.base_s1 + i] = a + p.average_weight * (param[p.base_p + i] - a);
}
