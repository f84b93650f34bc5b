# Sourced by bench/gpu_check.sh and bench/gpu_quality.sh on the lent device machine (no network): installs the
# wheels carried in .whl/ (bash ../shared/device/wheels.sh .whl fetches them here) where they come, and defines
# say(), which prints a line and appends it to $report.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
say() { echo "$*" | tee -a "$report"; }
