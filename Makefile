# Every target bootstraps .venv on its own: a fresh clone needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-run

.PHONY: venv browser test test-all test-cluster cluster-up cluster-down demo bench clean

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

test: $(STAMP) browser
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

# The whole pipeline on a synthetic corpus: corpus -> extract -> train -> evaluate (track + segment level).
DEMO_CLIQUES ?= 80
DEMO_EPOCHS ?= 30
CLI := $(BIN)/clews-pipe
demo: $(STAMP)
	@echo "== 1/6 demo corpus: $(DEMO_CLIQUES) cliques of synthetic versions -> $(DEMO_DIR)/corpus"
	test -f $(DEMO_DIR)/corpus/DiscogsVI-YT-20240701-light.json.test || \
	  $(CLI) demo-corpus $(DEMO_DIR)/corpus --cliques $(DEMO_CLIQUES) --seed 0 --splits 0.6,0.1,0.3 \
	    --duration-min 30 --duration-max 75
	@echo "== 2/6 extract: decode + CQT once into a Zarr store (Dask LocalCluster)"
	$(CLI) extract --dataset discogs-vi --meta $(DEMO_DIR)/corpus --audio $(DEMO_DIR)/corpus/audio --out $(DEMO_DIR)/store
	$(CLI) store info $(DEMO_DIR)/store
	$(CLI) store verify $(DEMO_DIR)/store
	@echo "== 3/6 train configs/tiny-cpu.yaml for $(DEMO_EPOCHS) epochs (Lightning Fabric)"
	$(CLI) train configs/tiny-cpu.yaml --store $(DEMO_DIR)/store --out $(DEMO_DIR)/run training.epochs=$(DEMO_EPOCHS)
	@echo "== 4/6 evaluate the test split, track level (bpwr-10), published protocol and clews-pipe's"
	$(CLI) evaluate --checkpoint $(DEMO_DIR)/run/checkpoint_best.ckpt --store $(DEMO_DIR)/store --split test \
	  --level track --redux bpwr-10 --out $(DEMO_DIR)/eval-track
	$(CLI) evaluate --checkpoint $(DEMO_DIR)/run/checkpoint_best.ckpt --store $(DEMO_DIR)/store --split test \
	  --level track --redux bpwr-10 --protocol clews-pipe --out $(DEMO_DIR)/eval-track-clews-pipe
	@echo "== 5/6 evaluate the test split, segment level (R_min)"
	$(CLI) evaluate --checkpoint $(DEMO_DIR)/run/checkpoint_best.ckpt --store $(DEMO_DIR)/store --split test \
	  --level segment --taus 5,10,20,30,40,60,90 --out $(DEMO_DIR)/eval-segment
	@echo "== 6/6 results"
	$(CLI) report $(DEMO_DIR)/eval-track --out $(DEMO_DIR)/report-track.html
	$(CLI) report $(DEMO_DIR)/eval-segment --out $(DEMO_DIR)/report-segment.html
	@cat $(DEMO_DIR)/eval-track/metrics.md
	@cat $(DEMO_DIR)/eval-track-clews-pipe/metrics.md
	@cat $(DEMO_DIR)/eval-segment/metrics.md
	@echo "training log:   $(DEMO_DIR)/run/metrics.csv  (TensorBoard: $(DEMO_DIR)/run/tensorboard)"
	@echo "checkpoint:     $(DEMO_DIR)/run/checkpoint_best.ckpt"
	@echo "plots:          $$(ls $(DEMO_DIR)/eval-segment/*.png 2>/dev/null | tr '\n' ' ')"
	@echo "reports:        $(DEMO_DIR)/report-track.html $(DEMO_DIR)/report-segment.html (open in a browser; self-contained)"

bench: $(STAMP)
	$(BIN)/python benchmarks/extract.py --json
	$(BIN)/python benchmarks/evaluate.py --json
	$(BIN)/python benchmarks/loader.py --json
	$(BIN)/python benchmarks/train_step.py --json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
