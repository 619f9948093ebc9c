"""Makes a transformers model a true float64 reference (DESIGN §9).

transformers computes RoPE cos/sin and RMSNorm in float32 even when the model is cast to
float64; patch_float64() replaces those forwards with float64 ones: RoPE angles from our
float64 inverse frequencies (cos/sin times our float64 YaRN attention factor), RMSNorm in
float64 (Qwen3's q_norm/k_norm are RMSNorm modules too). check_inv_freq() only checks that
transformers read the RoPE config (frequencies, attention scaling) as we do. Needs torch.
"""


def _rotary_modules(model):
    return [m for m in model.modules() if type(m).__name__.endswith("RotaryEmbedding")]


def check_inv_freq(model, inv_freq_f64, what, attention_factor=1.0):
    """Raises SystemExit when transformers' (float32) inverse frequencies or attention
    scaling differ from ours."""
    import torch
    inv64 = torch.tensor(inv_freq_f64, dtype=torch.float64)
    mods = _rotary_modules(model)
    if not mods:
        raise SystemExit(f"{what}: no rotary embedding module found")
    for mod in mods:
        theirs = getattr(mod, "inv_freq", None)
        if theirs is None:
            print(f"{what}: warning: {type(mod).__name__} has no inv_freq to compare", flush=True)
            continue
        rel = ((theirs.detach().to(torch.float64).cpu() - inv64).abs() / inv64).max().item()
        if rel > 1e-6:
            raise SystemExit(f"{what}: transformers inv_freq differs from ours (rel {rel:.3g})")
        scaling = float(getattr(mod, "attention_scaling", 1.0))
        if abs(scaling - attention_factor) > 1e-6 * attention_factor:
            raise SystemExit(f"{what}: attention_scaling {scaling}, ours {attention_factor}")
    return mods


def patch_float64(model, inv_freq_f64, what, attention_factor=1.0):
    """Checks the RoPE config, then patches RoPE and RMSNorm forwards to float64."""
    import torch
    inv64 = torch.tensor(inv_freq_f64, dtype=torch.float64)
    for mod in check_inv_freq(model, inv_freq_f64, what, attention_factor):
        def rot_forward(self, x, position_ids, *args, **kwargs):
            ang = position_ids.to(torch.float64)[..., None] * inv64.to(x.device)[None, None, :]
            emb = torch.cat((ang, ang), dim=-1)
            return (emb.cos() * attention_factor).to(x.dtype), (emb.sin() * attention_factor).to(x.dtype)
        mod.forward = rot_forward.__get__(mod)
    n_norm = 0
    for mod in model.modules():
        if type(mod).__name__.endswith("RMSNorm"):
            def norm_forward(self, hs):
                eps = getattr(self, "variance_epsilon", getattr(self, "eps", None))
                h = hs.to(torch.float64)
                h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
                return self.weight.to(torch.float64) * h
            mod.forward = norm_forward.__get__(mod)
            n_norm += 1
    if n_norm == 0:
        raise SystemExit(f"{what}: no RMSNorm module found to patch")
