# LightGlue → ONNX → TensorRT engine → matches. Targets chain through files; variables override defaults:
#   make engine EXTRACTOR=sift WEIGHTS=random PRECISION=fp16 PROFILES=profiles/sift.toml OUT=/srv/sift.engine
# WEIGHTS: official (default: weights/<extractor>_lightglue.pth, downloaded when absent), random (seeded,
# for smoke tests), nn (hand-set nearest-neighbour weights, not trained), sharp (those plus seeded residual
# updates: the accuracy-check weights, trt/models/sharp.py), or a path to a .pth file.

PYTHON     ?= .venv/bin/python
EXTRACTOR  ?= sift
WEIGHTS    ?= official
PRECISION  ?= fp32
PROFILES   ?= profiles/$(EXTRACTOR).toml
TARGET_SM  ?= 8.9
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
  WEIGHTS_TAG  := -$(basename $(notdir $(WEIGHTS)))
  WEIGHTS_FILE := $(WEIGHTS)
endif

ONNX   ?= weights/$(EXTRACTOR)_lightglue$(WEIGHTS_TAG).onnx
OUT    ?= $(basename $(ONNX))$(if $(filter fp16,$(PRECISION)),-fp16).engine
EXPORT_SOURCES := export.py $(wildcard trt/models/*.py trt/onnx/*.py) trt/contract.py trt/extractors.py
BUILD_SOURCES  := build_engine.py $(wildcard trt/engine/*.py trt/onnx/fp16.py)

.PHONY: setup onnx engine demo test bench eval bf16-gate trtexec clean
.DELETE_ON_ERROR:

setup:
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	# The CPU build of torch; a plain `torch` would pull a multi-GB CUDA build.
	.venv/bin/pip install torch==2.13.0
	.venv/bin/pip install -e '.[test]'

onnx: $(ONNX)

$(ONNX): $(EXPORT_SOURCES) $(WEIGHTS_FILE)
	$(PYTHON) export.py --extractor_type=$(EXTRACTOR) --lightglue_path $@ --dynamic $(WEIGHTS_FLAG)

engine: $(OUT)

$(OUT): $(ONNX) $(PROFILES) $(BUILD_SOURCES)
	$(PYTHON) build_engine.py --onnx $(ONNX) --profiles $(PROFILES) --precision $(PRECISION) \
		--target-sm $(TARGET_SM) --output $@

trtexec: $(ONNX)
	@$(PYTHON) build_engine.py --onnx $(ONNX) --profiles $(PROFILES) --precision $(PRECISION) --output $(OUT) --print-trtexec

# The main job end to end on a generated pair: export → engine → matches, then the homography check.
demo:
	$(MAKE) engine EXTRACTOR=sift WEIGHTS=nn
	$(PYTHON) -m trt.demo pair $(DEMO_DIR)
	$(PYTHON) trt_infer.py --engine weights/sift_lightglue-nn.engine $(DEMO_DIR)/image0.png $(DEMO_DIR)/image1.png \
		--output $(DEMO_DIR)/matches.json --viz $(DEMO_DIR)/matches.png
	$(PYTHON) -m trt.demo check $(DEMO_DIR)/matches.json $(DEMO_DIR)/H_0_1.txt

test:
	$(PYTHON) -m pytest -q -ra --durations=15

# Latency of every backend side by side (ONNX Runtime, OpenVINO f32 and bf16, TensorRT where a GPU is, our
# torch module, kornia's reference in fp32 and bf16 autocast), the SIFT front-end against bare OpenCV, and
# engine build time per profile count.
bench:
	$(PYTHON) bench/matcher_bench.py --output-dir $(BENCH_DIR)
	$(PYTHON) bench/build_bench.py --onnx $(BENCH_DIR)/models/sift_lightglue-sharp0.onnx

# Accuracy against ground truth (HPatches, rotated/scaled Sacre-Coeur in ../shared/data): FP32 and FP16 on
# ONNX Runtime, f32 and bf16 on OpenVINO (with the bf16 gate), engines on a GPU.
eval:
	$(PYTHON) bench/eval.py --output-dir $(EVAL_DIR)

# The bf16 accuracy gate for a model (default: the ONNX of EXTRACTOR and WEIGHTS): OpenVINO bf16 against f32
# on make eval's datasets; writes X.bf16-gate.json beside it, which --precision auto reads.
bf16-gate: $(ONNX)
	$(PYTHON) bench/bf16_gate.py --onnx $(ONNX)

clean:
	rm -rf out weights/*.onnx weights/*.engine weights/*.engine.json
