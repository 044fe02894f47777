# Two commands on a fresh machine:  `make train` then `make submit`  (and `make test`).
# Each creates .venv and installs requirements.txt on first use; it reinstalls only
# when requirements.txt changes. `VENV=` uses the current interpreter instead (Kaggle).
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= toy
OVERRIDES ?=
COMPETITION ?=
IMAGES ?=
DISTRACTORS ?=
QUERY ?=
TOP ?=
SUBMISSION ?=
SEEDS ?=
ADD ?=
REPRODUCES ?=
VARIANTS ?=
BENCH ?=
GPUS ?= 1
KAGGLE ?=
CHECKPOINT ?=
KAGGLE_USER ?= your-kaggle-name
KERNEL_VERSION ?= 1
KAGGLE_PYTHONS ?= 3.11 3.12 3.13
TRAIN_FEATURES ?=
MACHINE_SHAPE ?= NvidiaTeslaT4
DRYRUN ?=

ifeq ($(strip $(VENV)),)
PY := $(PYTHON)
SETUP :=
else
PY := $(VENV)/bin/python
SETUP := $(VENV)/.requirements-stamp
endif

RUN := $(PY) -m solution
# COMPETITION=<slug> runs a stage on that competition (your own images: docs/own-images.md); the run is then
# runs/<config>-<slug>, so the recipe's own run is never overwritten.
SETTINGS := $(if $(COMPETITION),competition=$(COMPETITION)) $(OVERRIDES)
# GPUS>1: one process per GPU through torchrun (DDP); add torchrun's --nnodes/--rdzv flags for several nodes.
ifeq ($(GPUS),1)
TRAIN := $(RUN) train
else
TRAIN := $(PY) -m torch.distributed.run --standalone --nproc_per_node $(GPUS) -m solution train
endif

.PHONY: plan gpu-verify setup data new-competition index query viz-data viz-retrieval extract ablate tune results ablate-heads ensemble transfer train kl export submit evaluate validate bench gpu-check kernel kernel-dryrun kernel-push submit-kaggle test lint clean help

help:
	@echo "make train | submit | test | data | viz-data | kl | export | ablate | tune | results | bench | plan | gpu-check | gpu-verify | kernel | kernel-dryrun | evaluate | validate | new-competition | index | query | setup | lint | clean"
	@echo "  CONFIG=<yaml name or path> OVERRIDES=\"train.epochs=2 ...\" VENV=<dir or empty> PYTHON=<interpreter> COMPETITION=<slug> IMAGES=<dir> QUERY=<files>"

$(VENV)/.requirements-stamp: requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade --quiet pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	touch $@

setup: $(SETUP)
ifeq ($(strip $(VENV)),)
	$(PY) -m pip install --quiet -r requirements.txt
endif

data: $(SETUP)
	$(RUN) data --config $(CONFIG) $(SETTINGS)

viz-data: $(SETUP)
	$(RUN) viz data --config $(CONFIG) $(SETTINGS)

viz-retrieval: $(SETUP)
	$(RUN) viz retrieval --config $(CONFIG) $(SETTINGS)

extract: $(SETUP)
	$(RUN) extract --config $(CONFIG) $(SETTINGS)

ablate: $(SETUP)
	$(RUN) ablate --config $(CONFIG) $(SETTINGS)

# QE / DBA / label re-ranking settings searched on the validation queries (adopted only on a clear gain)
tune: $(SETUP)
	$(RUN) tune --config $(CONFIG) $(SETTINGS)

# Every result table in README.md and docs/ rendered from docs/results/*.json (ADD=runs/<run>/<kind>.json files one first)
results: $(SETUP)
	$(RUN) results $(if $(ADD),--add $(ADD)) $(if $(REPRODUCES),--reproduces $(REPRODUCES))

# Every pooling head fine-tuned with the same recipe (SEEDS="0 1" for two seeds; VARIANTS="rmac mac spoc"
# for a subset, REMAP always included), compared with REMAP.
ablate-heads: data
	$(RUN) ablate-heads --config $(CONFIG) $(OVERRIDES) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(VARIANTS),--variants $(VARIANTS))

# CONFIG=<ensemble yaml>: the runs in its ensemble.members, combined (make submit does the same)
ensemble: $(SETUP)
	$(RUN) ensemble --config $(CONFIG) $(OVERRIDES)

transfer: $(SETUP)
	$(RUN) transfer --config $(CONFIG) $(SETTINGS)

train: data
	$(TRAIN) --config $(CONFIG) $(SETTINGS)

kl: $(SETUP)
	$(RUN) kl --config $(CONFIG) $(SETTINGS)

export: $(SETUP)
	$(RUN) export --config $(CONFIG) $(SETTINGS)

# The offline Kaggle kernel (landmark-retrieval-2021): build the folders, push them, submit a kernel version.
# Inference settings: CONFIG's when CONFIG is given (CONFIG=kernel-2021), else the checkpoint's own; with neither
# CONFIG nor CHECKPOINT, the toy run. KAGGLE_PYTHONS: the Pythons faiss is shipped for (Kaggle's GPU image runs
# 3.12); TRAIN_FEATURES=1 also ships train descriptors for label re-ranking.
KERNEL_CONFIG = $(if $(and $(CHECKPOINT),$(filter file,$(origin CONFIG))),,--config $(CONFIG))
kernel: $(SETUP)
	$(RUN) kernel $(KERNEL_CONFIG) --competition $(or $(COMPETITION),landmark-retrieval-2021) --user $(KAGGLE_USER) \
		$(foreach v,$(KAGGLE_PYTHONS),--python-version $(v)) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
		$(if $(filter 1,$(TRAIN_FEATURES)),--train-features) --machine-shape $(MACHINE_SHAPE) $(OVERRIDES)

# The kernel run here as on Kaggle (no network, no host faiss); DRYRUN="--test-images 1129" or "--full";
# CONFIG=kernel-2021 DRYRUN="--synthetic 2021": its path after extraction at the 2021 size (memory, time).
kernel-dryrun: $(SETUP)
	$(RUN) kernel-dryrun --config $(CONFIG) $(DRYRUN) $(OVERRIDES)

kernel-push: $(SETUP)
	$(RUN) kaggle push --dir kaggle

submit-kaggle: $(SETUP)
	$(RUN) kaggle submit --competition $(or $(COMPETITION),landmark-retrieval-2021) \
		--kernel $(KAGGLE_USER)/$(or $(COMPETITION),landmark-retrieval-2021)-remap --version $(KERNEL_VERSION) \
		--message "REMAP kernel version $(KERNEL_VERSION)"

# A recipe's steps, peak GPU memory (measured on fake tensors) and projected hours on T4/V100/A100/H100.
plan: $(SETUP)
	$(RUN) plan --config $(CONFIG) $(OVERRIDES)

# The first GPU's one command: plan + synthetic kernel path (also without a GPU), then gpu-check, the toy's
# train and submit on cuda and the kernel's run, in one table.
gpu-verify: $(SETUP)
	$(RUN) gpu-verify

gpu-check: $(SETUP)
	$(RUN) gpu-check

bench: $(SETUP)
	$(RUN) bench $(BENCH)

submit: $(SETUP)
	$(RUN) submit --config $(CONFIG) $(SETTINGS) $(if $(KAGGLE),--kaggle)
	$(RUN) viz retrieval --config $(CONFIG) $(SETTINGS)

# Your own images (docs/own-images.md): a competition from a folder, then search a folder with the trained run.
new-competition: $(SETUP)
	$(RUN) new-competition $(COMPETITION) --images $(IMAGES) $(if $(DISTRACTORS),--distractors $(DISTRACTORS))

index: $(SETUP)
	$(RUN) index --config $(CONFIG) --images $(IMAGES) $(SETTINGS)

query: $(SETUP)
	$(RUN) query $(QUERY) --config $(CONFIG) $(SETTINGS) $(if $(TOP),--top $(TOP))

evaluate: $(SETUP)
	$(RUN) evaluate --competition $(or $(COMPETITION),toy) --submission $(SUBMISSION)

validate: $(SETUP)
	$(RUN) validate --competition $(or $(COMPETITION),toy) $(SUBMISSION)

lint: $(SETUP)
	$(PY) -m ruff check .

test: $(SETUP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

clean:
	rm -rf runs/*/ submissions/*.csv submissions/*.csv.gz
