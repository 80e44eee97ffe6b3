# Every target bootstraps .venv on its own: a fresh clone needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-run

.PHONY: venv browser soundfont test test-all test-cluster cluster-up cluster-down demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and exactly: the CPU wheel; letting another package pull torch brings a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian's chromium renders the evaluation report in tests/test_report.py (installed when root).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
	  echo "chromium not installed (not root?): the browser test of the report will skip"

# Debian's fluidsynth + General MIDI soundfont render the demo's compositions corpus (installed when
# root; elsewhere demo-corpus falls back to its numpy synthesiser with a one-line notice).
soundfont:
	@{ command -v fluidsynth >/dev/null 2>&1 && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; } || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -q fluidsynth fluid-soundfont-gm >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q fluidsynth fluid-soundfont-gm >/dev/null)); } || \
	  echo "fluidsynth / fluid-soundfont-gm not installed (not root?): the demo corpus uses the numpy synthesiser"

test: $(STAMP) browser soundfont
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m 'not cluster'

# Real Slurm: a two-node cluster on this machine (scripts/test-cluster.sh; installs slurm-wlm + munge
# with apt-get when root), the sbatch templates and `extract --cluster slurm` run on it, then it is
# stopped again (unless it was already up). Skips with one line where root/packages cannot be had.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster tests/cluster -p no:cacheprovider -rs
cluster-up:
	scripts/test-cluster.sh up
cluster-down:
	scripts/test-cluster.sh down

# The whole pipeline on versions of real compositions: corpus -> extract -> Qmax baseline -> train ->
# evaluate, then model, baseline and chance MAP side by side. DEMO_KIND=synthetic: the numpy songs.
DEMO_KIND ?= compositions
DEMO_CLIQUES ?= 150
DEMO_TRAIN_ONLY ?= 300
DEMO_CONFIG ?= configs/small-cpu.yaml
DEMO_TRAIN_ARGS ?=
CLI := $(BIN)/clews-pipe
demo: $(STAMP) soundfont
	@echo "== 1/7 demo corpus: $(DEMO_CLIQUES) cliques of versions ($(DEMO_KIND)) + $(DEMO_TRAIN_ONLY) train-only -> $(DEMO_DIR)/corpus"
	test -f $(DEMO_DIR)/corpus/DiscogsVI-YT-20240701-light.json.test || \
	  $(CLI) demo-corpus $(DEMO_DIR)/corpus --kind $(DEMO_KIND) --cliques $(DEMO_CLIQUES) --seed 0 --splits 0.6,0.1,0.3 \
	  $(if $(filter compositions,$(DEMO_KIND)),--train-only-cliques $(DEMO_TRAIN_ONLY))
	@echo "== 2/7 extract: decode + CQT once into a Zarr store (Dask LocalCluster)"
	$(CLI) extract --dataset discogs-vi --meta $(DEMO_DIR)/corpus --audio $(DEMO_DIR)/corpus/audio --out $(DEMO_DIR)/store
	$(CLI) store info $(DEMO_DIR)/store
	$(CLI) store verify $(DEMO_DIR)/store
	@echo "== 3/7 baseline: chroma cross-recurrence Qmax on the test split (training-free, 2 ranks)"
	$(CLI) baseline --store $(DEMO_DIR)/store --split test --devices 2 --out $(DEMO_DIR)/eval-baseline
	@echo "== 4/7 train $(DEMO_CONFIG) (Lightning Fabric)"
	$(CLI) train $(DEMO_CONFIG) --store $(DEMO_DIR)/store --out $(DEMO_DIR)/run $(DEMO_TRAIN_ARGS)
	@echo "== 5/7 evaluate the test split, track level (bpwr-10, published protocol)"
	$(CLI) evaluate --checkpoint $(DEMO_DIR)/run/checkpoint_best.ckpt --store $(DEMO_DIR)/store --split test \
	  --level track --redux bpwr-10 --out $(DEMO_DIR)/eval-track
	@echo "== 6/7 evaluate the test split, segment level (R_min)"
	$(CLI) evaluate --checkpoint $(DEMO_DIR)/run/checkpoint_best.ckpt --store $(DEMO_DIR)/store --split test \
	  --level segment --taus 5,10,20,30,40,60,90 --out $(DEMO_DIR)/eval-segment
	@echo "== 7/7 results"
	$(CLI) report $(DEMO_DIR)/eval-track --out $(DEMO_DIR)/report-track.html
	$(CLI) report $(DEMO_DIR)/eval-baseline --out $(DEMO_DIR)/report-baseline.html
	$(CLI) report $(DEMO_DIR)/eval-segment --out $(DEMO_DIR)/report-segment.html
	$(CLI) plot $(DEMO_DIR)/eval-segment $(DEMO_DIR)/eval-track $(DEMO_DIR)/eval-baseline \
	  --labels "model (segment level)",model,"Qmax baseline" --out $(DEMO_DIR)/model-vs-baseline.png
	@cat $(DEMO_DIR)/eval-segment/metrics.md
	@$(BIN)/python scripts/compare_evals.py $(DEMO_DIR)/eval-track $(DEMO_DIR)/eval-baseline --labels "model ($(DEMO_CONFIG))",baseline
	@echo "training log:   $(DEMO_DIR)/run/metrics.csv  (TensorBoard: $(DEMO_DIR)/run/tensorboard)"
	@echo "checkpoint:     $(DEMO_DIR)/run/checkpoint_best.ckpt"
	@echo "plots:          $(DEMO_DIR)/model-vs-baseline.png $$(ls $(DEMO_DIR)/eval-segment/*.png 2>/dev/null | tr '\n' ' ')"
	@echo "reports:        $(DEMO_DIR)/report-track.html $(DEMO_DIR)/report-baseline.html $(DEMO_DIR)/report-segment.html (self-contained)"

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py --json
	$(BIN)/python benchmarks/evaluate.py --json
	$(BIN)/python benchmarks/loader.py --json
	$(BIN)/python benchmarks/train_step.py --json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
