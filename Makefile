# The two commands README.md gives. Both build the pinned environment first (once per machine).
.PHONY: demo test env

env:
	bash scripts/bootstrap.sh

demo:
	bash scripts/run.sh -m rep_mm.demo $(ARGS)

test:
	bash scripts/run.sh -m pytest $(ARGS)
