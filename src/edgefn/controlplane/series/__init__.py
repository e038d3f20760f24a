"""Per-version time series of each function's requests, errors and latency, built
from the nodes' reports (`service`), read by the console's charts (`api`)."""
