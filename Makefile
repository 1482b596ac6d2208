# make run / make test install what is missing (uv + the locked environment in .venv), then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV = $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
SYNCED := $(VENV)/.synced
ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: install run test lock environment clean-runs help

## uv and the locked environment in .venv (what run and test install when missing)
install: $(SYNCED)

# requirements.lock pins every package with its hashes, so a fresh machine gets exactly what CI tested.
$(SYNCED): pyproject.toml requirements.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
	  || $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps --editable .
	@touch $@

## Train the quickstart experiment (configs/experiment/quickstart.yaml; more overrides: make run ARGS="seed=1")
run: $(SYNCED)
	$(PY) src/train.py experiment=quickstart $(ARGS)

## The test suite, a file per worker process (TEST_WORKERS=0: all in this process)
## Most of its time is subprocesses starting (seconds of imports each) and waiting on each other, so two
## workers share two cores well; a file's tests stay together (one SLURM test at a time, module fixtures built once).
test: $(SYNCED)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## Re-resolve requirements.lock from pyproject.toml (newest allowed versions), then environment.yml
lock:
	$(UV) pip compile pyproject.toml --group dev --universal --generate-hashes --upgrade \
	  --custom-compile-command "make lock" --quiet -o requirements.lock
	$(MAKE) environment

## Regenerate environment.yml (conda, for GPU nodes) from pyproject.toml and requirements.lock
environment:
	$(PYTHON) scripts/write_environment.py > environment.yml

## Delete runs/, multirun/ and outputs/ (the runs of src/train.py outside results/)
clean-runs:
	rm -rf runs multirun outputs

## The targets with a line each (the first line of the ## comment above each)
help:
	@awk '/^## / { if (!text) text = substr($$0, 4); next } \
	  /^[a-z][A-Za-z0-9_-]*:([^=]|$$)/ { if (text) printf "  %-14s %s\n", substr($$0, 1, index($$0, ":") - 1), text; text = "" } \
	  /^$$/ { text = "" }' $(firstword $(MAKEFILE_LIST))

## Tested step against plain step, per engine and test: results/bench/<device>.md, and docs/benchmarks.md's summary of cpu.csv
.PHONY: bench
bench: $(SYNCED)
	$(PY) -m adabatch_bench.bench $(ARGS)
	$(PY) -m adabatch_bench.docs

## The same again into results/bench/repeat/: docs/benchmarks.md's summary then says how far apart the two runs are
.PHONY: bench-repeat
bench-repeat: $(SYNCED)
	$(PY) -m adabatch_bench.bench --out results/bench/repeat $(ARGS)
	$(PY) -m adabatch_bench.docs

## engine=local's tested step against a plain DDP step on 2 ranks, twice: results/bench/ranks_cpu.md and repeat/
.PHONY: bench-ranks
bench-ranks: $(SYNCED) | data-kjv
	$(PY) -m adabatch_bench.ranks $(ARGS)
	$(PY) -m adabatch_bench.ranks --out results/bench/repeat $(ARGS)
	$(PY) -m adabatch_bench.docs

## A sweep as a SLURM job array: make sweep NAME=eta GRID="experiment=cpu_digits_cnn batch_size.eta=0.25,0.5 seed=0,1"
NAME ?= sweep
GRID ?=
SBATCH_ARGS ?=
.PHONY: sweep
sweep: $(SYNCED)
	$(PY) scripts/sweep.py --name $(NAME) --submit $(foreach a,$(SBATCH_ARGS),--sbatch-arg=$(a)) $(GRID)

# ---------------------------------------------------------------------------------------------
# Reproduction. Every run is a make target (its summary.json), so an interrupted reproduction
# resumes where it stopped and finished runs are skipped. A run is <experiment>/<method>-<optimizer>/seed<k>:
# experiment from configs/experiment/, method from configs/method/, optimizer from configs/optimizer/.
SEEDS ?= 0 1 2

# CPU runs: the paper's MNIST-logistic row at full scale on Fashion-MNIST, and the MNIST CNN row scaled
# to the embedded digits. Each also sweeps a frontier: constant batches from b0 to b_max by factors of 4
# and the norm test at several eta (a run id may end in /<plan key>_<value>: that plan key overridden).
CPU_EXPERIMENTS := fashion_logistic cpu_digits_cnn
CPU_METHODS := constant_small-adagrad constant_large-adagrad linear_ramp-adagrad stagewise-adagrad \
  norm_test-adagrad norm_test-adagrad_norm norm_test-adam
# The frontier's extra points run with FRONTIER_SEEDS (a mean and a spread each), the row's methods with SEEDS.
FRONTIER = $(foreach b,$(1),constant_small-adagrad/b0_$(b)) $(foreach e,$(2),norm_test-adagrad/eta_$(e))
FRONTIER_SEEDS ?= 0 1
# The tests the paper's logistic row leaves out: inner-product (theta = plan.theta), coordinate-wise (the
# paper's max over coordinates, and its 0.9-quantile), and the norm test corrected for a finite population.
fashion_logistic_RUNS := $(CPU_METHODS) augmented_test-adagrad inner_product_test-adagrad coordinate_test-adagrad \
  coordinate_test-adagrad/quantile_0.9 norm_test_finite-adagrad
fashion_logistic_FRONTIER := $(call FRONTIER,8 32 128 512 2048 8192 32768 60000,0.05 0.25 0.5 1)
cpu_digits_cnn_RUNS := $(CPU_METHODS)
cpu_digits_cnn_FRONTIER := $(call FRONTIER,16 64 256,0.05 0.1 0.25 0.5)
# The paper's MNIST CNN row at full scale on Fashion-MNIST (1-2 core-hours a run: not part of the default).
fashion_cnn_RUNS := $(fashion_logistic_RUNS)
# Its frontier adds b = 128, 2048 and full batch to the row's constant 8 and 4096, η = 0.25 and 1 to the row's
# 0.1, and Adam (its config's lr, as the row's Adam with the norm test) at constant b = 4096 and full batch, so
# that the norm test with Adam has constant batches of its own optimizer beside it: 7 points, 14 runs (a suite
# of 50 runs, one to two hours each on one core).
fashion_cnn_FRONTIER := $(call FRONTIER,128 2048 60000,0.25 1) constant_large-adam constant_small-adam/b0_60000
# Language models (SUITE=kjv_gpt, needs `make data-kjv`): a small GPT on the King James Bible, AdamW for
# every method (the LM optimizer) and the norm test with AdaGrad; the warmup doubles the batch at fixed tokens.
kjv_gpt_RUNS := norm_test-adamw norm_test-adagrad noise_scale-adamw constant_small-adamw constant_large-adamw \
  linear_ramp-adamw batch_warmup-adamw

PAPER_EXPERIMENTS := mnist_logistic mnist_cnn cifar10_resnet18 cifar10_resnet50 cifar100_resnet50 cifar10_vit
BASELINES = constant_small-$(1) constant_large-$(1) linear_ramp-$(1) stagewise-$(1)
mnist_logistic_RUNS := $(call BASELINES,adagrad) norm_test-adagrad norm_test-adagrad_norm norm_test-adam
mnist_cnn_RUNS := $(mnist_logistic_RUNS)
cifar10_resnet18_RUNS := $(call BASELINES,adagrad) norm_test-adagrad norm_test-adagrad_norm norm_test-adam
cifar10_resnet50_RUNS := $(call BASELINES,sgdm) norm_test-sgdm
cifar100_resnet50_RUNS := $(call BASELINES,sgdm) norm_test-sgdm augmented_test-sgdm
cifar10_vit_RUNS := $(call BASELINES,adamw) norm_test-adamw augmented_test-adamw norm_test-adam

# Seed by seed (every method and frontier point of seed 0, then of seed 1, ...): a suite stopped part-way
# has the first seeds of every method rather than every seed of the first methods.
run_targets = $(foreach e,$(2),$(foreach s,$(sort $(SEEDS) $(FRONTIER_SEEDS)),\
  $(foreach r,$(if $(filter $(s),$(SEEDS)),$($(e)_RUNS)) $(if $(filter $(s),$(FRONTIER_SEEDS)),$($(e)_FRONTIER)),\
  results/$(1)/runs/$(e)/$(r)/seed$(s)/summary.json)))
CPU_RUN_TARGETS := $(call run_targets,cpu,$(CPU_EXPERIMENTS))

# The learning-rate study (SUITE=lr_study): on fashion_logistic with 5000 training examples held out, each
# method of LR_METHODS at each of LR_GRID (8e-3 x 1/4 .. 64) with LR_SEEDS; scripts/choose_lr.py picks each
# method's rate by final validation accuracy (never the test set) into LR_CHOSEN, which the reruns
# (LR_RERUN_SEEDS, seeds the choice never saw) read. Constant b = 16384 and 32768 sit between b = 4096 and
# the full batch, where the norm test at eta = 0.1 lands (32768 takes about its number of steps).
LR_METHODS := constant_small-adagrad/b0_128 constant_large-adagrad constant_small-adagrad/b0_16384 \
  constant_small-adagrad/b0_32768 constant_small-adagrad/b0_60000 norm_test-adagrad norm_test-adagrad/eta_1 \
  linear_ramp-adagrad
LR_GRID := 0.002 0.008 0.032 0.128 0.512
LR_SEEDS ?= 0 1
LR_RERUN_SEEDS ?= 2 3 4
LR_RUNS := results/lr_study/runs
LR_CHOSEN := results/lr_study/chosen_lr.json
LR_GRID_TARGETS := $(foreach m,$(LR_METHODS),$(foreach r,$(LR_GRID),$(foreach s,$(LR_SEEDS),\
  $(LR_RUNS)/fashion_logistic_lr_grid/$(m)/lr_$(r)/seed$(s)/summary.json)))
lr_chosen_ids = $(shell $(PYTHON) scripts/choose_lr.py --ids $(LR_CHOSEN))
LR_RERUN_TARGETS = $(foreach i,$(lr_chosen_ids),$(foreach s,$(LR_RERUN_SEEDS),\
  $(LR_RUNS)/fashion_logistic_lr_chosen/$(i)/seed$(s)/summary.json))
PAPER_RUN_TARGETS := $(call run_targets,paper,$(PAPER_EXPERIMENTS))

# $(call train_run,<experiment>/<method>-<optimizer>[/<key>_<value>...]/seed<k>,<run dir>)
word_of = $(word $(2),$(subst $(3), ,$(1)))
# Each <key>_<value> between the method and the seed overrides one setting: the key (what comes before the
# last "_") is a plan key, unless OVERRIDE_PATH_<key> names the config key it sets.
OVERRIDE_PATH_lr := optimizer.lr
OVERRIDE_PATH_quantile := batch_size.quantile
OVERRIDE_PATH_validation := dataset.validation
override_key = $(patsubst %_$(lastword $(subst _, ,$(1))),%,$(1))
run_override = $(or $(OVERRIDE_PATH_$(call override_key,$(1))),plan.$(call override_key,$(1)))=$(lastword $(subst _, ,$(1)))
run_overrides = $(foreach o,$(filter-out seed%,$(wordlist 3,99,$(subst /, ,$(1)))),$(call run_override,$(o)))
define train_run
$(PY) src/train.py experiment=$(call word_of,$(1),1,/) method=$(call word_of,$(call word_of,$(1),2,/),1,-) \
  optimizer=$(call word_of,$(call word_of,$(1),2,/),2,-) seed=$(patsubst seed%,%,$(lastword $(subst /, ,$(1)))) \
  $(call run_overrides,$(1)) \
  train.progress_every_s=60 hydra.run.dir=$(2) $(RUN_ARGS)
endef

# CPU runs are small: one thread each, as many runs at once as there are cores.
results/cpu/runs/%/summary.json: | $(SYNCED)
	OMP_NUM_THREADS=1 $(call train_run,$*,$(@D))

results/paper/runs/%/summary.json: | $(SYNCED)
	$(call train_run,$*,$(@D))

$(LR_RUNS)/%/summary.json: | $(SYNCED)
	OMP_NUM_THREADS=1 $(call train_run,$*,$(@D))

.PHONY: reproduce reproduce-cpu cpu-runs paper-runs figures data data-fashion-mnist data-kjv pack-runs smoke-paper paper-run-ids
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# Named suites of reproduce-cpu (SUITE=<name>): each its runs (make targets: an interrupted suite resumes),
# then pack-runs and figures. Without SUITE: the CPU experiments, fashion_logistic and cpu_digits_cnn.
SUITES := fashion_logistic cpu_digits_cnn fashion_cnn lr_study kjv_gpt
SUITE ?=
suite_runs = $(if $(SUITE),suite-$(SUITE),cpu-runs)

## The CPU reproduction on real data: runs, figures, tables (SUITE=fashion_logistic|cpu_digits_cnn|fashion_cnn|lr_study|kjv_gpt: one suite)
reproduce-cpu: | suite-known $(SYNCED) $(if $(filter kjv_gpt,$(SUITE)),data-kjv,data-fashion-mnist)
	$(MAKE) -k -j$(JOBS) $(suite_runs)
	$(if $(filter lr_study,$(SUITE)),$(MAKE) lr-study-figures,$(MAKE) pack-runs RUNS=results/cpu/runs && $(MAKE) figures RUNS=results/cpu/runs OUT=results/cpu)

cpu-runs: $(CPU_RUN_TARGETS)

## Where a suite stands (SUITE=<name>, as reproduce-cpu): each run done, part-way or not started, train time so far and to go
suite-status: | suite-known $(SYNCED)
	@$(PY) scripts/suite_status.py $(patsubst %/summary.json,%,$(suite_targets))

suite_targets = $(if $(filter lr_study,$(SUITE)),$(LR_GRID_TARGETS) $(LR_RERUN_TARGETS),\
  $(if $(SUITE),$(call run_targets,cpu,$(SUITE)),$(CPU_RUN_TARGETS)))

.PHONY: suite-known suite-status
suite-known:
	@if [ -n "$(SUITE)" ] && ! echo " $(SUITES) " | grep -q " $(SUITE) "; then \
	  echo "error: SUITE=$(SUITE) is unknown; choose one of $(SUITES) (or none: fashion_logistic and cpu_digits_cnn)" >&2; exit 2; fi

.PHONY: suite-fashion_logistic suite-cpu_digits_cnn suite-fashion_cnn suite-lr_study suite-kjv_gpt lr-grid-runs lr-chosen-runs lr-study-figures
suite-fashion_logistic: $(call run_targets,cpu,fashion_logistic)
suite-cpu_digits_cnn: $(call run_targets,cpu,cpu_digits_cnn)
suite-fashion_cnn: $(call run_targets,cpu,fashion_cnn)
suite-kjv_gpt: $(call run_targets,cpu,kjv_gpt)

# The grid, the choice, then the reruns (a make of their own: their targets come from the choice).
suite-lr_study: lr-grid-runs
	$(MAKE) $(LR_CHOSEN)
	$(MAKE) -k -j$(JOBS) lr-chosen-runs

lr-grid-runs: $(LR_GRID_TARGETS)

$(LR_CHOSEN): $(LR_GRID_TARGETS) | $(SYNCED)
	$(PY) scripts/choose_lr.py $(LR_RUNS)/fashion_logistic_lr_grid --out $@

lr-chosen-runs: $(LR_RERUN_TARGETS)

## The learning-rate study's tables and figures from its records: results/lr_study/ (comparison.md: chosen vs 8e-3)
lr-study-figures: | $(SYNCED)
	$(PY) scripts/pack_runs.py $(LR_RUNS)
	$(PY) scripts/make_figures.py $(LR_RUNS) --out results/lr_study --title "Learning-rate study"
	$(PY) scripts/choose_lr.py $(LR_RUNS)/fashion_logistic_lr_grid --compare $(LR_RUNS)/fashion_logistic_lr_chosen \
	  --chosen $(LR_CHOSEN) --out-dir results/lr_study

## The paper's experiments, for a GPU node (one run at a time): runs, figures, tables
reproduce: | $(SYNCED)
	$(MAKE) paper-runs
	$(MAKE) pack-runs RUNS=results/paper/runs
	$(MAKE) figures RUNS=results/paper/runs OUT=results/paper

paper-runs: $(PAPER_RUN_TARGETS)

# The decision-quality study of batch_size.engine=local (issue 34): the norm test from at least M = 2, 4, 8, 16
# parts against the per-example norm test on the same configuration, SEEDS each, per experiment of
# LOCAL_STUDY with its optimizer: the logistic row (fashion_logistic, AdaGrad) and the GPT (kjv_gpt, AdamW).
LOCAL_STUDY ?= fashion_logistic kjv_gpt
LOCAL_STUDY_PARTS ?= 2 4 8 16
fashion_logistic_LOCAL_OPTIMIZER := adagrad
kjv_gpt_LOCAL_OPTIMIZER := adamw
local_study_targets = $(foreach s,$(SEEDS),results/local_study/runs/$(1)/norm_test-$(2)/seed$(s)/summary.json) \
  $(foreach m,$(LOCAL_STUDY_PARTS),$(foreach s,$(SEEDS),results/local_study/runs/$(1)/norm_test_local-$(2)/parts_$(m)/seed$(s)/summary.json))
LOCAL_STUDY_TARGETS := $(foreach e,$(LOCAL_STUDY),$(call local_study_targets,$(e),$($(e)_LOCAL_OPTIMIZER)))

results/local_study/runs/%/summary.json: | $(SYNCED)
	OMP_NUM_THREADS=1 $(call train_run,$*,$(@D))

.PHONY: local-study local-study-runs
## engine=local against the per-example norm test (M = 2-16 parts, 3 seeds; LOCAL_STUDY=fashion_logistic kjv_gpt): results/local_study/
local-study: | $(SYNCED) data
	$(MAKE) -k -j$(JOBS) local-study-runs
	$(MAKE) pack-runs RUNS=results/local_study/runs
	$(foreach e,$(LOCAL_STUDY),$(PY) scripts/local_study.py results/local_study/runs/$(e) --out results/local_study/$(e) && ) true

local-study-runs: $(LOCAL_STUDY_TARGETS)

## Every paper run's real steps at its true shapes on stand-in pixels (CPU, ~15 min): results/smoke/cpu.md
smoke-paper: | $(SYNCED)
	$(PY) -m adabatch_bench.smoke_paper $(ARGS)

## On a GPU node, first (<10 min): quickstart fp32/bf16/compile/auto, bench and smoke subsets, 2-GPU torchrun
.PHONY: gpu-check
gpu-check: | $(SYNCED)
	$(PY) -m adabatch_bench.gpu_check $(ARGS)

# The run ids of make reproduce, one per (experiment, method, optimizer): what smoke-paper runs
paper-run-ids:
	@echo $(foreach e,$(PAPER_EXPERIMENTS),$(foreach r,$($(e)_RUNS),$(e)/$(r)))

## Figures and tables from run records alone (RUNS: a run, a directory of runs or a multirun), then the docs' generated blocks
RUNS ?= results/cpu/runs
OUT ?= results/cpu
figures: | $(SYNCED)
	$(PY) scripts/make_figures.py $(RUNS) --out $(OUT)
	$(PY) -m adabatch_bench.docs

## Gzip finished runs' metrics.jsonl (what results/ commits; figures read either)
pack-runs: | $(SYNCED)
	$(PY) scripts/pack_runs.py $(RUNS)

## The data the runs read: Fashion-MNIST (reproduce-cpu) and the King James Bible as text (dataset=text)
data: data-fashion-mnist data-kjv

## Fashion-MNIST for reproduce-cpu: Debian's dataset-fashion-mnist (apt-get, as root), else a download into data/
FASHION_DIR := /usr/share/datasets/fashion-mnist
data-fashion-mnist: | $(SYNCED)
	@if [ -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make data: installing Debian's dataset-fashion-mnist"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	    && exit 0; fi; \
	$(PY) -c "from adabatch.data import load_dataset; load_dataset('fashion_mnist', 'data')" 2>/dev/null && exit 0; \
	echo "make data: Fashion-MNIST is missing; install it with 'sudo apt-get install dataset-fashion-mnist'" \
	  "or put its four idx files in data/FashionMNIST/raw/" >&2; exit 1

## The King James Bible (Debian's bible-kjv, apt-get as root) as UTF-8 text: <data_dir>/kjv.txt, dataset=text's default
DATA_DIR ?= $(or $(ADABATCH_DATA_DIR),data)
KJV_TEXT := $(DATA_DIR)/kjv.txt
data-kjv: $(KJV_TEXT)

$(KJV_TEXT):
	@if ! command -v bible >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make data: installing Debian's bible-kjv"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv) >/dev/null 2>&1; fi; \
	command -v bible >/dev/null || { echo "make data: the King James Bible is missing; install it with" \
	  "'sudo apt-get install bible-kjv' and run make data again" >&2; exit 1; }
	@mkdir -p $(@D)
	bible -l0 Gen1:1-Rev22:21 > $@.tmp && mv $@.tmp $@
