"""FlashVideo models in ComfyUI's memory manager, checked against a stand-in of it (no ComfyUI here).

The stand-in (comfy.model_management + comfy.model_patcher in sys.modules) behaves as ComfyUI 0.3.64
does for plain torch modules where it matters: load_models_gpu registers a patcher in
current_loaded_models and moves the weights (all of them with force_full_load, a share of them
otherwise, none under --novram's 0-byte budget); free_memory unloads registered models, partly
first (ModelPatcher.partially_unload moves some layers), whole if that frees too little.

The meta device stands in for the GPU where a test needs weights to really move: meta holds no
data, so the stand-in "moves back" from it with to_empty (memory given back, contents not kept).
The real ComfyUI check is scripts/check_memory_manager.py (README, "In ComfyUI": memory).
"""

import logging
import sys
from types import ModuleType, SimpleNamespace

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS as N
from nodes import comfy_memory
from nodes.common import LoadedModel

AUTO_TOKENIZER = "auto (tokenizer/ beside the encoder)"
META, CPU = torch.device("meta"), torch.device("cpu")


def _move(module: torch.nn.Module, device) -> None:
    device = torch.device(device)
    if device.type != "meta" and any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
        module.to_empty(device=device)
    else:
        module.to(device)


def _leaves(module: torch.nn.Module) -> list:
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def _nbytes(module: torch.nn.Module, device=None) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()
               if device is None or p.device.type == torch.device(device).type)


class StandInPatcher:
    """comfy.model_patcher.ModelPatcher as it treats a module without comfy.ops layers."""

    def __init__(self, model, load_device, offload_device, size=0):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device

    def model_size(self):
        return _nbytes(self.model)

    def loaded_size(self):
        return _nbytes(self.model, self.load_device)

    def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
        if STATE.oom_on_load:
            self.detach()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        if STATE.stuck:
            return 0
        budget = self.loaded_size() + extra_memory
        for leaf in _leaves(self.model):
            size = _nbytes(leaf)
            if size < budget:
                _move(leaf, device_to)
                budget -= size
        return self.loaded_size()

    def partially_unload(self, device_to, memory_to_free=0):
        freed = 0
        for leaf in _leaves(self.model):
            if freed < memory_to_free and _nbytes(leaf, self.load_device):
                freed += _nbytes(leaf)
                _move(leaf, device_to)
        return freed

    def detach(self, unpatch_all=True):
        _move(self.model, self.offload_device)


class StandInLoaded:
    """comfy.model_management.LoadedModel: model_unload tries a partial unload first, as ComfyUI's does."""

    def __init__(self, patcher):
        self.model = patcher

    def model_unload(self, memory_to_free=None, unpatch_weights=True):
        if memory_to_free is not None and memory_to_free < self.model.loaded_size():
            if self.model.partially_unload(self.model.offload_device, memory_to_free) >= memory_to_free:
                return False
        self.model.detach(unpatch_weights)
        return True


class Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException (what Cancel raises)."""


STATE = SimpleNamespace(oom_on_load=False, stuck=False)


@pytest.fixture()
def comfy(monkeypatch, tmp_path):
    """The stand-in installed; returns its model_management with .calls, .interrupt_after, .loaded(handle)."""
    return install_standin(monkeypatch, tmp_path)


def install_standin(monkeypatch, tmp_path):
    """Put the stand-in comfy, comfy.model_management and comfy.model_patcher in sys.modules (monkeypatch undoes it)."""
    STATE.oom_on_load = STATE.stuck = False
    mm = ModuleType("comfy.model_management")
    mm.calls, mm.current_loaded_models, mm.interrupt_after = [], [], None
    mm.required, mm.freed = [], []  # memory_required of each load_models_gpu, memory_required of each free_memory
    mm.vram_state = SimpleNamespace(name="NORMAL_VRAM")
    mm.InterruptProcessingException = Interrupted

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        mm.calls.append(("load_models_gpu", list(models), force_full_load))
        mm.required.append(memory_required)
        for patcher in models:
            if any(entry.model is patcher for entry in mm.current_loaded_models):
                continue
            # model_management.py 668-686: a CPU load device counts as DISABLED; LOW_VRAM and NORMAL_VRAM get a
            # share of free memory unless force_full_load; NO_VRAM 0.1 byte whatever is asked; 0 means all (487-495)
            state = "DISABLED" if torch.device(patcher.load_device).type == "cpu" else mm.vram_state.name
            budget = patcher.model_size() / 2 if state in ("LOW_VRAM", "NORMAL_VRAM") and not force_full_load else 0
            budget = 0.1 if state == "NO_VRAM" else budget
            patcher.partially_load(patcher.load_device, budget or 1e32)
            mm.current_loaded_models.insert(0, StandInLoaded(patcher))

    def free_memory(memory_required, device, keep_loaded=()):
        mm.freed.append(memory_required)
        for entry in list(mm.current_loaded_models):
            if entry.model.load_device == device and entry not in keep_loaded and entry.model_unload(memory_required):
                mm.current_loaded_models.remove(entry)

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_after is not None:
            mm.interrupt_after -= 1
            if mm.interrupt_after < 0:
                mm.interrupt_after = None
                raise Interrupted()

    mm.load_models_gpu, mm.free_memory = load_models_gpu, free_memory
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.get_free_memory = lambda device=None: 3 * 2**30
    mm.get_torch_device = lambda: CPU
    mm.unet_offload_device = lambda: mm.get_torch_device() if mm.vram_state.name == "HIGH_VRAM" else CPU  # 747-751
    mm.soft_empty_cache = lambda force=False: mm.calls.append(("soft_empty_cache",))
    mm.loaded = lambda handle: [e.model for e in mm.current_loaded_models].count(handle.comfy_patcher) == 1
    mp = ModuleType("comfy.model_patcher")
    mp.ModelPatcher = StandInPatcher
    package = ModuleType("comfy")
    package.__path__, package.__file__ = [], str(tmp_path / "comfy" / "__init__.py")
    package.model_management, package.model_patcher = mm, mp
    for name, module in {"comfy": package, "comfy.model_management": mm, "comfy.model_patcher": mp}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return mm


def _loads(mm) -> list:
    """The patchers load_models_gpu was asked for, in order, and empties the record; each asked for a full load."""
    asked = [(patchers, full) for name, *rest in mm.calls if name == "load_models_gpu" for patchers, full in [rest]]
    mm.calls.clear()
    assert all(full for _, full in asked), "plain torch modules must be loaded whole (force_full_load=True)"
    return [patcher for patchers, _ in asked for patcher in patchers]


def _tiny(device=META, offload_to=CPU) -> LoadedModel:
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    return LoadedModel(module, device, offload_to, torch.float32, "/models/FlashVideo/tiny.pt")


def _devices(handle) -> set:
    return {p.device.type for p in handle.module.parameters()}


def _watch(handles: dict, mm) -> list:
    """Record (name, registered with ComfyUI at that moment) for every forward of every module of each handle."""
    seen = []
    for name, handle in handles.items():
        for module in handle.module.modules():
            module.register_forward_pre_hook(lambda _m, _a, name=name, h=handle: seen.append((name, mm.loaded(h))))
    return seen


def test_each_node_loads_its_model_through_comfyui_before_using_it(comfy_models, comfy, monkeypatch):
    monkeypatch.setattr("nodes.common.decode_preview_frame", lambda vae, latent, **_: torch.zeros(8, 8, 3))
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "offload after use")[0]
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "keep on device")[0]
    vae = N["FlashVideoVAELoader"]().load("3d-vae.pt", "fp32", "offload after use")[0]
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "auto", "offload after use")[0]
    seen = _watch({"t5": t5, "stage1": stage1, "stage2": stage2, "vae": vae}, comfy)
    assert _loads(comfy) == [] and comfy.current_loaded_models == [], "loading a file registers nothing yet"

    embeds = N["FlashVideoTextEncode"]().encode(t5, "A red fox runs through fresh snow at sunrise.", True)[0]
    assert _loads(comfy) == [t5.comfy_patcher]
    latent1 = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 3, 8.0, 5.0, 9, 48, 32)[0]
    assert _loads(comfy) == [stage1.comfy_patcher]
    preview = N["FlashVideoVAEDecode"]().decode(vae, latent1, "auto", 2, 64, 8)[0]
    prepared = N["FlashVideoPrepareStage2"]().prepare(vae, preview, 96, 64, 0)[0]
    assert _loads(comfy) == [vae.comfy_patcher] * 2
    degraded = N["FlashVideoLatentDegradation"]().degrade(prepared, 675, 0)[0]
    N["FlashVideoStage2Sampler"]().sample(stage2, embeds, degraded, 2, 13.0, 2.5, "euler")
    assert _loads(comfy) == [stage2.comfy_patcher]
    N["FlashVideoEnhanceImages"]().enhance(stage2, vae, embeds, torch.rand(9, 24, 32, 3), "x2", 1920, True, 675,
                                           1, 13.0, 2.5, 5, 1, False, 0)
    assert _loads(comfy) == [vae.comfy_patcher, stage2.comfy_patcher, vae.comfy_patcher] * 2, "2 windows"

    assert {name for name, _ in seen} == {"t5", "stage1", "stage2", "vae"}
    assert all(registered for _, registered in seen), "every forward ran with its model registered"
    # on the CPU the offload device is the compute device: nothing to move, all four stay listed for ComfyUI
    listed = {id(entry.model) for entry in comfy.current_loaded_models}
    assert listed == {id(handle.comfy_patcher) for handle in (t5, stage1, stage2, vae)}


def test_inside_comfyui_the_nodes_compute_what_they_compute_without_it(comfy_models, monkeypatch, tmp_path):
    def stage1_latent():
        t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "auto", "offload after use")[0]
        stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "keep on device")[0]
        embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake at dawn.", False)[0]
        return N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 3, 2, 8.0, 5.0, 5, 32, 32)[0]["samples"]

    without = stage1_latent()
    mm = install_standin(monkeypatch, tmp_path)
    inside = stage1_latent()
    assert len(_loads(mm)) == 2 and torch.equal(without, inside)


def test_cancel_inside_a_node_leaves_its_model_registered_and_whole(comfy_models, comfy):
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "auto", "offload after use")[0]
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    comfy.interrupt_after = 1  # the second progress event of Stage I cancels
    with pytest.raises(Interrupted):  # ComfyUI's own exception comes through unchanged
        N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 4, 8.0, 5.0, 5, 32, 32)
    assert comfy.loaded(stage1) and _devices(stage1) == {"cpu"}
    latent = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 4, 8.0, 5.0, 5, 32, 32)[0]
    assert latent["samples"].shape == (1, 16, 2, 4, 4), "the next run uses the registered model"


@pytest.mark.parametrize("offload", [True, False])
def test_a_block_that_raises_leaves_the_model_whole_in_a_known_state(comfy, offload):
    """Cancel on the GPU: "offload after use" ends unloaded (weights back on the CPU, ComfyUI's cache emptied,
    nothing listed); "keep on device" ends loaded whole and listed. Never some layers here and some there."""
    handle = _tiny(offload_to=CPU if offload else None)
    with pytest.raises(Interrupted), handle.active() as module:
        assert _devices(handle) == {"meta"} and comfy.loaded(handle)
        module(torch.zeros(1, 4, device=META))
        raise Interrupted()
    if offload:
        assert _devices(handle) == {"cpu"} and comfy.current_loaded_models == []
        assert comfy.calls[-1] == ("soft_empty_cache",)
    else:
        assert _devices(handle) == {"meta"} and comfy.loaded(handle)


def test_offload_after_use_unloads_through_comfyui_and_keep_stays_loaded(comfy):
    offloading, kept = _tiny(), _tiny(offload_to=None)
    for handle in (offloading, kept, offloading):
        with handle.active():
            assert _devices(handle) == {"meta"} and comfy.loaded(handle)
    assert _loads(comfy) == [offloading.comfy_patcher, kept.comfy_patcher, offloading.comfy_patcher]
    assert _devices(offloading) == {"cpu"} and not comfy.loaded(offloading)
    assert _devices(kept) == {"meta"} and comfy.loaded(kept)
    assert kept.comfy_patcher.offload_device == CPU, "ComfyUI can still unload a kept model to the offload device"
    assert type(offloading.module) is torch.nn.Sequential and not hasattr(offloading.module, "model_lowvram"), \
        "ComfyUI's bookkeeping lands on the holder, not on our module"


def test_comfyui_unloads_a_kept_model_whole_when_another_node_needs_memory(comfy):
    kept = _tiny(offload_to=None)
    with kept.active():
        pass
    size = kept.comfy_patcher.model_size()
    comfy.free_memory(size // 4, META)  # a quarter: ComfyUI would move only some layers of a plain patcher
    assert _devices(kept) == {"cpu"} and comfy.current_loaded_models == []
    plain = StandInPatcher(kept.comfy_patcher.model, META, CPU)
    _move(plain.model, META)
    assert plain.partially_unload(CPU, size // 4) and len({p.device for p in plain.model.parameters()}) == 2, \
        "the stand-in is not blind: a plain ModelPatcher would have left the model half-moved"
    with kept.active():
        assert _devices(kept) == {"meta"} and comfy.loaded(kept), "the next use loads it again"


def test_novram_loads_the_model_whole_for_its_block_and_says_so(comfy, caplog):
    comfy.vram_state = SimpleNamespace(name="NO_VRAM")
    kept = _tiny(offload_to=None)
    with caplog.at_level(logging.WARNING), kept.active() as module:
        assert _devices(kept) == {"meta"}
        module(torch.zeros(1, 4, device=META))
    assert "--novram" in caplog.text and "cannot run split between devices" in caplog.text
    assert _devices(kept) == {"cpu"} and comfy.current_loaded_models == [], "--novram: unloaded right after"


def _start_comfyui_with(mm, flag: str) -> None:
    """The stand-in as ComfyUI 0.3.64 starts with `flag` on a machine with a GPU (meta): model_management.py
    380-386 (--lowvram: LOW_VRAM; --gpu-only/--highvram: HIGH_VRAM), 140-141 and 398-399 (--cpu: CPUState.CPU,
    vram_state DISABLED), 169-187 (get_torch_device: the CPU under --cpu, else the GPU)."""
    states = {"--lowvram": "LOW_VRAM", "--gpu-only": "HIGH_VRAM", "--cpu": "DISABLED"}
    mm.vram_state = SimpleNamespace(name=states[flag])
    mm.get_torch_device = lambda: CPU if flag == "--cpu" else META


def test_lowvram_loads_our_model_whole_and_it_stays_loaded(comfy, caplog):
    """--lowvram: ComfyUI loads only the weights a budget drawn from free memory allows (model_management.py
    676-681; the rest is left for comfy.ops layers to stream) unless load_models_gpu is asked for force_full_load;
    ours ask for it, so the model is on the GPU whole, with no warning, and "keep on device" keeps it loaded."""
    _start_comfyui_with(comfy, "--lowvram")
    kept = _tiny(offload_to=None)
    with caplog.at_level(logging.WARNING), kept.active():
        assert _devices(kept) == {"meta"} and comfy.loaded(kept)
    assert _loads(comfy) == [kept.comfy_patcher] and caplog.text == ""
    assert _devices(kept) == {"meta"} and comfy.loaded(kept), "a whole load needs no unload after the block"


def test_gpu_only_keeps_our_models_on_the_gpu_between_nodes(comfy_models, comfy):
    """--gpu-only: ComfyUI's offload device is the GPU (model_management.py 747-751), so, like core's models, ours
    wait on the GPU from the loader on and stay loaded after their node even with "offload after use"; ComfyUI's
    own unload (free_memory) leaves them on the GPU too."""
    _start_comfyui_with(comfy, "--gpu-only")
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "offload after use")[0]
    assert stage2.device == META and stage2.offload_to == META and _devices(stage2) == {"meta"}
    with stage2.active():
        assert comfy.loaded(stage2)
    assert _loads(comfy) == [stage2.comfy_patcher] and stage2.comfy_patcher.offload_device == META
    assert _devices(stage2) == {"meta"} and comfy.loaded(stage2), "offload after use: nothing to offload to"
    comfy.free_memory(1e30, META)
    assert _devices(stage2) == {"meta"} and comfy.current_loaded_models == []


def test_cpu_flag_runs_our_models_on_the_cpu_on_a_machine_with_a_gpu(comfy_models, comfy, monkeypatch):
    """--cpu: ComfyUI's device is the CPU (model_management.py 177) even where the core alone would pick the GPU
    (devices.default_device, made the meta device here); the loader's "auto" precision is then fp32, and the
    CPU load is a whole one (model_management.py 670-671: a CPU load device counts as DISABLED)."""
    monkeypatch.setattr("flashvideo_core.devices.default_device", lambda: META)
    _start_comfyui_with(comfy, "--cpu")
    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "auto", "offload after use")[0]
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "offload after use")[0]
    assert (stage1.device, stage1.dtype, _devices(stage1)) == (CPU, torch.float32, {"cpu"})
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    latent = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 2, 8.0, 5.0, 5, 32, 32)[0]["samples"]
    assert latent.device == CPU and torch.isfinite(latent).all()
    assert _loads(comfy) == [t5.comfy_patcher, stage1.comfy_patcher]
    assert stage1.comfy_patcher.load_device == CPU and comfy.loaded(stage1) and _devices(stage1) == {"cpu"}


def test_a_model_comfyui_will_not_place_whole_is_refused_naming_the_flag(comfy):
    comfy.vram_state = SimpleNamespace(name="NO_VRAM")
    STATE.stuck = True
    handle = _tiny()
    with pytest.raises(RuntimeError, match=r"Sequential \(tiny.pt\): ComfyUI \(--novram\) keeps .* Start ComfyUI "
                                           r"without --novram, or with --cpu"), handle.active():
        pytest.fail("the block must not run")
    assert _devices(handle) == {"cpu"} and comfy.current_loaded_models == []


def test_a_model_too_large_for_the_gpu_is_named_with_what_is_free(comfy):
    STATE.oom_on_load = True
    handle = _tiny()
    with pytest.raises(torch.OutOfMemoryError, match=r"Sequential \(tiny.pt\) needs 0.0 GB on meta and does not "
                                                     r"fit \(3.0 GB free after ComfyUI unloaded what it could\)"
                                                     r".* bf16 or fp16 .*--cpu"), handle.active():
        pytest.fail("the block must not run")
    assert _devices(handle) == {"cpu"} and comfy.current_loaded_models == []


def test_without_comfyui_active_is_devices_on_device(monkeypatch):
    assert "comfy" not in sys.modules, "these tests run without ComfyUI"
    moved = []
    real = comfy_memory.on_device
    monkeypatch.setattr(comfy_memory, "on_device", lambda *args: moved.append(args) or real(*args))
    handle = _tiny(offload_to=None)
    with handle.active() as module:
        assert module is handle.module and _devices(handle) == {"meta"}
    assert moved == [(handle.module, META, None)] and handle.comfy_patcher is None


def test_a_comfy_stand_in_without_model_patcher_is_not_comfyui(monkeypatch):
    """Other tests stand in comfy.model_management alone (free memory, devices): that is not a memory manager."""
    mm = ModuleType("comfy.model_management")
    package = ModuleType("comfy")
    package.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", package)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    assert comfy_memory.comfy_memory_manager() is None
    handle = _tiny(offload_to=None)
    with handle.active():
        assert _devices(handle) == {"meta"}
    assert handle.comfy_patcher is None


def test_inside_comfyui_a_kept_model_waits_off_the_gpu_until_comfyui_loads_it(comfy_models, comfy):
    comfy.get_torch_device = lambda: META  # the fake GPU
    stage2 = N["FlashVideoStage2Loader"]().load("stage2.pt", "auto", "keep on device")[0]
    assert _devices(stage2) == {"cpu"} and comfy.current_loaded_models == [], "not on the GPU behind ComfyUI's back"
    with stage2.active():
        assert _devices(stage2) == {"meta"} and comfy.loaded(stage2)
    assert _devices(stage2) == {"meta"} and comfy.loaded(stage2), "keep on device: stays loaded, listed"


# --- too little memory (issue 12): refused before ComfyUI loads the model; an out-of-memory while sampling ---

CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 11.7 GiB."


class Sampled(Exception):
    """Raised by a patched run_stage1: the sampler got past its memory checks."""


def _raise(error: BaseException):
    raise error


def test_a_model_whose_weights_cannot_fit_is_refused_before_comfyui_loads_it(comfy, monkeypatch):
    """On a GPU (meta), the room ComfyUI can make must hold the model's weights (not on the device yet) and one
    call's activation floor; at exactly that least need the sampler runs (a lower bound, no margin)."""
    from flashvideo_core import config
    from flashvideo_core.errors import FlashVideoInputError
    from flashvideo_core.memory_floor import transformer_floor
    from flashvideo_core.model.transformer import build_transformer

    handle = LoadedModel(build_transformer(config.TINY_STAGE1, seed=0), META, CPU, torch.float32, "/m/stage1.pt")
    weights = _nbytes(handle.module)
    floor = transformer_floor(5, 32, 32, config.TINY_STAGE1.num_heads * config.TINY_STAGE1.head_dim, torch.float32)
    embeds = SimpleNamespace(stage1=torch.zeros(1, 226, config.TINY_STAGE1.text_dim), prompt="A fox.")
    monkeypatch.setattr("nodes.sampling_nodes.run_stage1", lambda *args, **kwargs: _raise(Sampled()))
    for free, refused in ((weights - 1, "the weights alone do not fit in this mode"),
                          (weights + floor - 1, "needs at least"), (weights + floor, None)):
        comfy.get_free_memory = lambda device=None, free=free: free
        with pytest.raises(FlashVideoInputError if refused else Sampled) as raised:
            N["FlashVideoStage1Sampler"]().sample(handle, embeds, 0, 2, 8.0, 5.0, 5, 32, 32)
        if refused:
            assert refused in str(raised.value) and "Stage I at 32x32 (WxH) with 5 frames" in str(raised.value)
            assert _loads(comfy) == [], "refused before ComfyUI loads it"
        else:
            assert _loads(comfy) == [handle.comfy_patcher]


def test_out_of_memory_while_sampling_is_comfyuis_oom_with_our_message(comfy_models, comfy, monkeypatch):
    """ComfyUI 0.3.64 (execution.py) unloads every model on a torch.cuda.OutOfMemoryError and shows its text: the
    sampler's is one, naming the stage, its step, the free memory and a mode in the nodes' inputs; the model stays
    registered and whole, and the next run works."""
    from flashvideo_core.progress import ProgressEvent
    from nodes import sampling_nodes

    t5 = N["FlashVideoT5Loader"]().load("text_encoder/", AUTO_TOKENIZER, "auto", "offload after use")[0]
    stage1 = N["FlashVideoStage1Loader"]().load("stage1.pt", "auto", "offload after use")[0]
    embeds = N["FlashVideoTextEncode"]().encode(t5, "A lake.", False)[0]
    real = sampling_nodes.run_stage1

    def runs_out(model, embeds, settings, seed=0, callback=None, **kwargs):
        callback(ProgressEvent("stage1", 1, settings.steps))
        raise torch.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(sampling_nodes, "run_stage1", runs_out)
    with pytest.raises(torch.cuda.OutOfMemoryError) as raised:
        N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 4, 8.0, 5.0, 5, 32, 32)
    text = str(raised.value)
    assert text.startswith("Stage I ran out of memory on cpu (last progress: stage1 1/4). 3.0 GiB was free when the "
                           "run started, and it needs at least ")
    assert text.endswith(f"sequential_cfg on. (The memory is released. Error: {CUDA_OOM})")
    assert comfy.loaded(stage1) and _devices(stage1) == {"cpu"}
    monkeypatch.setattr(sampling_nodes, "run_stage1", real)
    latent = N["FlashVideoStage1Sampler"]().sample(stage1, embeds, 0, 4, 8.0, 5.0, 5, 32, 32)[0]
    assert latent["samples"].shape == (1, 16, 2, 4, 4)
