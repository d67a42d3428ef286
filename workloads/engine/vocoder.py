"""SeamlessM4T v2's unit vocoder (HiFi-GAN): the library's module as is, or compiled and replayed
per length bucket, and the FLOPs of its convolution stack."""
from __future__ import annotations

import contextlib
import copy
import math
import weakref

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .conv_layout import conv1d_as_channels_last_2d
from .graphs import capture_graph, compile_own, warm_on_side_stream

SPEAKER_ID = 0


class Vocoder:
    """The unit HiFi-GAN: the library module as is, or compiled (and replayed as CUDA graphs)
    per length bucket.

    The library's forward upsamples units to frames with `repeat_interleave`, whose output
    size is data: a host sync in the middle, and eager launches around it. Here it is split
    in two stages with one host read between them: (A) unit embedding and the library's
    duration predictor over units padded to a multiple of `unit_bucket` (masked, so padding
    changes no duration), giving each unit's last frame; (B) frames gathered by
    `searchsorted` over those ends, padded to a multiple of `bucket`, the language and
    speaker embeddings, and the convolution stack. `compile` compiles B per (batch, units,
    frames) bucket; `cuda_graph` also records A (eager kernels, so durations round exactly
    as the library's do) and B as CUDA graphs. Frame padding changes only the last samples
    within the convolutions' reach of the end (tests state the bound).
    """

    def __init__(self, module, mode: str = "eager", *, bucket: int = 64, unit_bucket: int = 32,
                 inductor_options: dict | None = None, compiled: dict | None = None, conv2d: bool = False):
        if mode not in ("eager", "compile", "cuda_graph"):
            raise ValueError(f"vocoder mode {mode!r}: expected eager, compile or cuda_graph")
        if conv2d and mode == "eager":
            raise ValueError("vocoder conv2d: the 2-D layout is for the compiled paths (mode compile or cuda_graph)")
        self.module, self.mode, self.bucket, self.unit_bucket = module, mode, bucket, unit_bucket
        # The convolution stack stage B runs: the library's, or a copy with its 1-D convolutions
        # as channels-last 2-D ones (the library's module, which eager runs, is left as it is).
        self.hifi_gan = conv1d_as_channels_last_2d(module.hifi_gan) if conv2d else module.hifi_gan
        self.inductor_options = inductor_options or None
        self.conv2d = conv2d
        self._compiled: dict[tuple, object] = {} if compiled is None else compiled   # may be shared
        self._samples_for: dict[int, int] = {}
        self._graphs_a: dict[tuple, tuple] = {}
        self._graphs_b: dict[tuple, tuple] = {}

    # -- stage A: durations ---------------------------------------------------------------
    def _durations(self, ids: torch.Tensor, unit_mask: torch.Tensor):
        """Unit embeddings, each unit's end frame (cumulative durations) and each row's count
        of non-pad units, as CodeHifiGan.forward and _get_dur_output_lengths compute them."""
        voc = self.module
        h = voc.unit_embedding(ids)
        log_dur = voc.dur_predictor(h, padding_mask=unit_mask)
        dur = torch.clamp(torch.round(torch.expm1(log_dur)).long(), min=1) * unit_mask
        real = (ids != voc.pad_token_id).sum(1, keepdim=True)   # bucket padding is pad too
        return h, torch.cat([dur.cumsum(1), real], dim=1)

    def _stage_a(self, ids: torch.Tensor, unit_mask: torch.Tensor):
        if self.mode != "cuda_graph":
            return self._durations(ids, unit_mask)
        key = tuple(ids.shape)
        if key not in self._graphs_a:
            static = (ids.clone(), unit_mask.clone())
            warm_on_side_stream(lambda: self._durations(*static))
            graph, out = capture_graph(lambda: self._durations(*static))
            self._graphs_a[key] = (graph, static, out)
        graph, (s_ids, s_mask), out = self._graphs_a[key]
        s_ids.copy_(ids)
        s_mask.copy_(unit_mask)
        graph.replay()
        return out

    # -- stage B: frames and the convolution stack ----------------------------------------
    def _synthesize(self, h: torch.Tensor, ends: torch.Tensor, lang: torch.Tensor, spkr: torch.Tensor,
                    frames: int) -> torch.Tensor:
        voc = self.module
        B, U, _ = h.shape
        t = torch.arange(frames, device=h.device)
        # The unit each frame repeats: the first whose end lies beyond it (repeat_interleave's order).
        unit = torch.searchsorted(ends, t.expand(B, frames).contiguous(), right=True).clamp(max=U - 1)
        x = torch.gather(h, 1, unit.unsqueeze(-1).expand(B, frames, h.shape[-1]))
        x = (x * (t < ends[:, -1:]).unsqueeze(-1).to(x.dtype)).transpose(1, 2)   # zeros past each row's frames
        spkr_e = voc.speaker_embedding(spkr).transpose(1, 2).expand(-1, -1, frames)
        lang_e = voc.language_embedding(lang).transpose(1, 2).expand(-1, -1, frames)
        return self.hifi_gan(torch.cat([lang_e, x, spkr_e], dim=1))

    def _compiled_b(self, key: tuple):
        fn = self._compiled.get(key)
        if fn is None:
            # A code object per bucket: buckets are separate graphs, not recompiles of one.
            fn = self._compiled[key] = compile_own(type(self)._synthesize, self, fullgraph=True, dynamic=False,
                                                   options=self.inductor_options)
        return fn

    def _cudnn_plans(self):
        """cuDNN's benchmark mode around the 2-D stack's calls: the plan for each convolution
        shape is then the fastest cuDNN timed, not its heuristic's pick (docs/measured.md,
        "SeamlessM4T v2's vocoder alone: ..."). PyTorch caches a
        shape's plan under a key without this flag but with the memory format, so the
        channels-last shapes, which only this stack runs, get timed plans, and the 1-D stacks
        timed beside it (eager's too) keep their heuristic ones."""
        if not self.conv2d:
            return contextlib.nullcontext()
        return _cudnn_benchmark()

    def _stage_b(self, h, ends, lang, spkr, frames: int) -> torch.Tensor:
        key = (tuple(h.shape), frames)
        fn = self._compiled_b(key)
        if self.mode == "compile":
            with self._cudnn_plans():
                return fn(h, ends, lang, spkr, frames)
        if key not in self._graphs_b:
            static = (h, ends, lang.clone(), spkr.clone())   # h, ends: stage A's graph outputs
            with self._cudnn_plans():   # plans are chosen in the warm-up, outside the capture
                warm_on_side_stream(lambda: fn(*static, frames))
                graph, out = capture_graph(lambda: fn(*static, frames))
            self._graphs_b[key] = (graph, static, out)
        graph, (_, _, s_lang, s_spkr), out = self._graphs_b[key]
        s_lang.copy_(lang)
        s_spkr.copy_(spkr)
        graph.replay()
        return out

    @torch.no_grad()
    def __call__(self, unit_ids: torch.Tensor, lang_id: int, speaker_id: int = SPEAKER_ID):
        voc = self.module
        B, U = unit_ids.shape
        dev = unit_ids.device
        lang = torch.full((B, 1), lang_id, dtype=torch.long, device=dev)
        spkr = torch.full((B, 1), speaker_id, dtype=torch.long, device=dev)
        if self.mode == "eager":
            return voc(input_ids=unit_ids, speaker_id=spkr, lang_id=lang)
        Ub = -(-U // self.unit_bucket) * self.unit_bucket
        ids = nn.functional.pad(unit_ids, (0, Ub - U), value=voc.pad_token_id)
        unit_mask = (torch.arange(Ub, device=dev) < U).expand(B, Ub).to(torch.long)
        h, ends_real = self._stage_a(ids, unit_mask)
        ends = ends_real[:, :-1]
        # The one host read: frame counts choose the bucket.
        host = ends_real.cpu()
        T = int(host[:, Ub - 1].max())
        Tb = -(-T // self.bucket) * self.bucket
        wave = self._stage_b(h, ends, lang, spkr, Tb)
        # While the stack runs: output lengths by the library's formula, on the host (on the
        # device they are a hundred tiny kernels).
        last = host[:, -1].clamp(0, U - 1)   # the library's index: the count of non-pad units
        units = host[:, :-1].gather(1, last.unsqueeze(1)).reshape(-1)
        lengths = torch.tensor([self._samples(int(n)) for n in units], dtype=torch.long)
        return wave[:, :self._samples(T)].clone(), lengths

    def _samples(self, frames: int) -> int:
        """The library's waveform length for `frames` frames, once per count: its formula is some
        four hundred tensor operations, about a millisecond of host time."""
        n = self._samples_for.get(frames)
        if n is None:
            n = self._samples_for[frames] = int(self.module._get_output_hifigan_lengths(torch.tensor(frames)))
        return n


# Not torch.backends.cudnn.flags: it sets every other cuDNN flag too, to its own defaults
# (enabled=False among them) unless each is passed.
@contextlib.contextmanager
def _cudnn_benchmark():
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


_META_STACKS: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def vocoder_flops(vocoder: nn.Module, waveform_lengths) -> float:
    """FLOPs of the vocoder's HiFi-GAN convolution stack for waveforms of these lengths (one per
    row, each as if run without padding), as torch's flop counter counts them; the unit
    embedding and the duration predictor are left out. Counted on a copy of the stack on the
    meta device: shapes only, no memory, no kernels. Each frame upsamples to
    prod(upsample_rates) samples, so a row's frames are its length over that."""
    stack = _META_STACKS.get(vocoder)
    if stack is None:
        stack = _META_STACKS[vocoder] = copy.deepcopy(vocoder.hifi_gan).to("meta")
    hop = math.prod(vocoder.config.upsample_rates)
    dtype = next(stack.parameters()).dtype
    frames = [int(n) // hop for n in torch.as_tensor(waveform_lengths).reshape(-1).tolist()]
    per_length: dict[int, float] = {}
    for f in set(frames):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            stack(torch.empty(1, stack.conv_pre.in_channels, f, device="meta", dtype=dtype))
        per_length[f] = float(fc.get_total_flops())
    return sum(per_length[f] for f in frames)
