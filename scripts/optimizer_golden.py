#!/usr/bin/env python3
"""Golden values of netmorph's optimizers, computed by Keras (tests/optimizer_golden.rs reads them).

Every case starts from the same 12 parameters and applies the same 5 explicit gradients, one per
step, recording the parameters after each step. Everything runs in float32, as netmorph does.

    python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install keras jax optax
    KERAS_BACKEND=jax /tmp/kvenv/bin/python scripts/optimizer_golden.py

writes tests/data/optimizer_golden.json. The golden values come from Keras 3 on the JAX backend.
optax (if installed) is a second, independent opinion: the script asserts it agrees with Keras on
every case, and records the largest difference. Both get the float32 values of the hyperparameters,
the values netmorph's f32 fields hold.

Where netmorph's convention is not Keras's, the case says how Keras is made to compute netmorph's
convention with an exact identity; no formula of netmorph is restated here:

- Adadelta: netmorph follows Keras (epsilon inside both square roots, the learning rate
  multiplying the step, accumulators starting at zero): keras.optimizers.Adadelta as is.
- SGD: netmorph follows PyTorch (v = momentum*v + g; p -= lr*v; Nesterov p -= lr*(g + momentum*v);
  weight decay as an L2 term added to the gradient). Keras keeps v' = momentum*v' - lr*g, which is
  -lr*v for a constant learning rate, so momentum and Nesterov are keras.optimizers.SGD as is.
  Keras's weight_decay is decoupled (p -= lr*wd*p before the step): without momentum that is the
  same update as PyTorch's L2 term, so that case uses it; with momentum the two differ, so those
  cases give Keras the gradient of the loss plus an L2 penalty 0.5*wd*|p|^2, differentiated by JAX.
- Adam: netmorph follows PyTorch's AdamW: p -= lr * m_hat / (sqrt(v_hat) + eps), with decoupled
  weight decay p *= 1 - lr*wd first (Keras's weight_decay is the same). Keras puts epsilon on the
  uncorrected sqrt(v): p -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps_keras), bc_i = 1 - beta_i^t.
  PyTorch's update equals lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps*sqrt(bc2)), so before step t the
  script sets Keras's epsilon to eps*sqrt(1 - beta2^t) (optax, whose convention is PyTorch's,
  confirms it). Gradients near 1e-7 make the two conventions differ by far more than the tolerance.
"""

import json
import math
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "optimizer_golden.json")

# Mixed magnitudes and signs, zero and values near zero.
INITIAL = [0.0, 1.0, -1.0, 0.5, -0.25, 3.0, -2.75, 1e-3, -4e-4, 0.125, 10.0, -7.5]

# One row per step. Columns: sign changes, a constant gradient, large alternating values, zeros
# before the first nonzero gradient, gradients near 1e-7 (where Adam's epsilon of 1e-8 matters)
# and near 1e-4 (where Adadelta's epsilon of 1e-7 competes with g^2), and large values.
GRADIENTS = [
    [0.1, 1.0, -0.3, 5.0, 1e-3, 0.0, 2.5, 1e-7, 1e-4, -0.01, 20.0, 1e-6],
    [-0.2, 0.5, -0.3, -4.0, 2e-3, 0.0, 2.5, -2e-7, 1e-4, 0.02, -15.0, 1e-2],
    [0.3, 0.25, -0.3, 3.0, -1e-3, 0.7, -2.5, 1e-7, -2e-4, -0.03, 12.5, -1e-6],
    [-0.05, -0.5, -0.3, -2.0, 5e-4, 0.0, 0.1, 3e-7, 0.0, 0.04, -30.0, 1e-2],
    [0.0, 1.5, -0.3, 1.0, 1e-3, -0.7, 0.0, -1e-7, 5e-5, -0.05, 8.0, 0.0],
]

# (optimizer, case name, hyperparameters under netmorph's names). Defaults first.
CASES = [
    ("adadelta", "keras2_defaults", dict(lr=1.0, rho=0.95, eps=1e-7)),
    ("adadelta", "lr_rho_eps", dict(lr=0.5, rho=0.9, eps=1e-6)),
    ("sgd", "plain", dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False)),
    ("sgd", "momentum", dict(lr=0.05, momentum=0.9, weight_decay=0.0, nesterov=False)),
    ("sgd", "nesterov", dict(lr=0.05, momentum=0.9, weight_decay=0.0, nesterov=True)),
    ("sgd", "weight_decay", dict(lr=0.01, momentum=0.0, weight_decay=0.1, nesterov=False)),
    ("sgd", "momentum_weight_decay", dict(lr=0.2, momentum=0.5, weight_decay=1e-3, nesterov=False)),
    ("sgd", "nesterov_weight_decay", dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)),
    ("adam", "pytorch_defaults", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)),
    ("adam", "betas", dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.0)),
    ("adam", "adamw", dict(lr=5e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.1)),
]


def f32(x):
    """The float32 value of x, as a Python float (exact in JSON, exact again as f32 in Rust)."""
    return float(np.float32(x))


def l2_gradient(g, p, wd):
    """The gradient of <g, p> + 0.5*wd*|p|^2 at p: a loss with an L2 penalty, by JAX."""
    return jax.grad(lambda q: jnp.dot(g, q) + 0.5 * wd * jnp.sum(q * q))(p)


def run_keras(opt_name, h):
    """Parameters after each step, and a description of how Keras was configured."""
    var = keras.Variable(np.array(INITIAL, np.float32), dtype="float32", name="param")
    grad_of = lambda g: g  # noqa: E731
    per_step = None
    if opt_name == "adadelta":
        opt = keras.optimizers.Adadelta(learning_rate=h["lr"], rho=h["rho"], epsilon=h["eps"])
        how = f"keras.optimizers.Adadelta(learning_rate={h['lr']}, rho={h['rho']}, epsilon={h['eps']})"
    elif opt_name == "sgd":
        decoupled = h["weight_decay"] != 0.0 and h["momentum"] == 0.0
        coupled = h["weight_decay"] != 0.0 and h["momentum"] != 0.0
        opt = keras.optimizers.SGD(
            learning_rate=h["lr"],
            momentum=h["momentum"],
            nesterov=h["nesterov"],
            weight_decay=h["weight_decay"] if decoupled else None,
        )
        how = f"keras.optimizers.SGD(learning_rate={h['lr']}, momentum={h['momentum']}, nesterov={h['nesterov']}"
        how += f", weight_decay={h['weight_decay']})" if decoupled else ")"
        if coupled:
            wd = h["weight_decay"]
            grad_of = lambda g: l2_gradient(g, var.value, wd)  # noqa: E731
            how += f" fed the JAX gradient of <g, p> + 0.5*{wd}*|p|^2 (PyTorch's L2 weight decay)"
    elif opt_name == "adam":
        wd = h["weight_decay"]
        cls = keras.optimizers.AdamW if wd != 0.0 else keras.optimizers.Adam
        kw = dict(weight_decay=wd) if wd != 0.0 else {}
        opt = cls(learning_rate=h["lr"], beta_1=h["beta1"], beta_2=h["beta2"], epsilon=h["eps"], **kw)
        beta2 = f32(h["beta2"])
        per_step = lambda t: setattr(opt, "epsilon", h["eps"] * math.sqrt(1.0 - beta2**t))  # noqa: E731
        how = f"keras.optimizers.{cls.__name__}(learning_rate={h['lr']}, beta_1={h['beta1']}, beta_2={h['beta2']}"
        how += f", weight_decay={wd}" if wd != 0.0 else ""
        how += f") with epsilon = {h['eps']} * sqrt(1 - beta_2^t) before step t (PyTorch's epsilon placement)"
    else:
        raise ValueError(opt_name)
    opt.build([var])
    steps = []
    for t, g in enumerate(GRADIENTS, start=1):
        if per_step:
            per_step(t)
        opt.apply_gradients([(grad_of(jnp.array(g, jnp.float32)), var)])
        value = np.asarray(var.numpy())
        assert value.dtype == np.float32, value.dtype
        steps.append(value.copy())
    return steps, how


def run_optax(opt_name, h):
    """The same case by optax (PyTorch's conventions throughout), or None without optax."""
    try:
        import optax
    except ImportError:
        return None
    if opt_name == "adadelta":
        tx = optax.adadelta(h["lr"], rho=h["rho"], eps=h["eps"])
    elif opt_name == "sgd":
        sgd = optax.sgd(h["lr"], momentum=h["momentum"] or None, nesterov=h["nesterov"])
        tx = optax.chain(optax.add_decayed_weights(h["weight_decay"]), sgd) if h["weight_decay"] else sgd
    else:
        tx = optax.adamw(h["lr"], b1=h["beta1"], b2=h["beta2"], eps=h["eps"], weight_decay=h["weight_decay"])
    p = jnp.array(INITIAL, jnp.float32)
    state = tx.init(p)
    steps = []
    for g in GRADIENTS:
        updates, state = tx.update(jnp.array(g, jnp.float32), state, p)
        p = optax.apply_updates(p, updates)
        steps.append(np.asarray(p))
    return steps


def main():
    assert keras.backend.backend() == "jax", f"run with KERAS_BACKEND=jax, not {keras.backend.backend()}"
    assert keras.backend.floatx() == "float32", keras.backend.floatx()
    assert all(len(g) == len(INITIAL) for g in GRADIENTS)
    try:
        import optax

        optax_version = optax.__version__
    except ImportError:
        optax_version = None
    cases = []
    for opt_name, case, decimal in CASES:
        # Both sides get the same float32 hyperparameters: netmorph takes f32, and Keras given the
        # decimal would compute some terms (1 - rho, 1 - beta) from the double, others from the f32.
        h = {k: (v if isinstance(v, bool) else f32(v)) for k, v in decimal.items()}
        steps, how = run_keras(opt_name, h)
        entry = {
            "optimizer": opt_name,
            "case": case,
            "hyperparameters": h,
            "decimal_hyperparameters": decimal,
            "reference": how,
            "steps": [[float(x) for x in s] for s in steps],
        }
        other = run_optax(opt_name, h)
        if other is not None:
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(steps, other))
            for t, (a, b) in enumerate(zip(steps, other), start=1):
                bad = np.abs(a - b) > 1e-5 * np.abs(a) + 1e-7
                assert not bad.any(), f"{opt_name}/{case} step {t}: Keras {a[bad]} vs optax {b[bad]}"
            entry["max_abs_diff_optax"] = diff
        cases.append(entry)
        print(f"{opt_name:9} {case:22} {decimal}" + (f"\n{'':32} optax agrees, max |diff| {diff:.3g}" if other is not None else ""))
    doc = {
        "generator": "scripts/optimizer_golden.py",
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "jax_version": jax.__version__,
        "optax_version": optax_version,
        "floatx": keras.backend.floatx(),
        "initial": [f32(x) for x in INITIAL],
        "gradients": [[f32(x) for x in g] for g in GRADIENTS],
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        # One line per vector of numbers.
        text = json.dumps(doc, indent=1)
        text = re.sub(r"\[\s*([-+0-9.e]+(?:,\s*[-+0-9.e]+)*)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
        f.write(text + "\n")
    print(f"wrote {os.path.normpath(OUT)} ({len(cases)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
