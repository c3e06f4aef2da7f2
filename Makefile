# The course's two commands (see README.md):
#   make book   - set everything up, build the website (executing every chapter), say where to open it
#   make test   - set everything up, run the whole test suite (it builds the website too)
# Both create .venv on first use; nothing else on the machine is touched.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= python3
# The environment's commands first (nbgrader itself runs `alembic` by name).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: book serve test exercises grade bench check-claims clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: other versions pull gigabytes of CUDA packages.
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo
	@echo "The course is built. Open file://$(CURDIR)/_build/html/index.html in a browser,"
	@echo "or run 'make serve' and open http://localhost:8000"

serve: $(STAMP)
	$(PY) -m http.server --directory _build/html 8000

# Serve the course's model as a web app on http://127.0.0.1:8000 (PORT=8001 for another port); if
# ~/.cache/llm-from-scratch-course/app-model holds no model yet, train it first (python -m course_lib.webapp train).
.PHONY: app
app: $(STAMP)
	$(PY) -m course_lib.webapp serve --train-if-missing $(if $(PORT),--port $(PORT))

test: $(STAMP)
	$(PY) -m pytest

# Regenerate the student notebooks in exercises/ from solutions/ (never edit exercises/ by hand).
exercises: $(STAMP)
	for dir in solutions/*/; do $(VENV)/bin/nbgrader generate_assignment "$$(basename "$$dir")" --force || exit 1; done

# Autograde every submission of one assignment with JOBS worker processes (default: one per CPU):
#   make grade ASSIGNMENT=ch05_attention [JOBS=2]
# Same result as `nbgrader autograde ASSIGNMENT`; see "Grading a large class" in book/instructor_guide.md.
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make grade ASSIGNMENT=<assignment, e.g. ch05_attention> [JOBS=N]"; exit 2; }
	$(PY) -m course_grading.parallel_grading $(ASSIGNMENT) $(if $(JOBS),--jobs $(JOBS))

# Re-measure every figure of the performance page and the README (about 20 minutes; needs an idle machine).
bench: $(STAMP)
	$(PY) bench/train_throughput.py --save
	rm -f bench/results/loss_at_budget.json
	$(PY) bench/loss_at_budget.py --save
	$(PY) bench/loss_at_budget.py --save --tag baseline --recipe '{"batch": 12, "max_lr": 1e-3, "min_lr": 1e-4}'
	$(PY) bench/kv_cache.py --save
	$(PY) bench/autograde.py --save
	$(PY) bench/book_build.py --save
	$(PY) bench/summary.py --readme

# Run every chapter under four CPU code paths and three seeds; report every asserted claim's values
# (about an hour on 2 cores; writes bench/results/claims.json, which the performance page reads).
check-claims: $(STAMP)
	$(PY) scripts/check_claims.py --save

clean:
	rm -rf _build book/_static/vendor
