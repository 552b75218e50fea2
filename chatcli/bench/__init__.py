"""``chatcli bench``: an honest multi-client load simulator for a chat relay.

The pure, event-loop-free core lives in these modules and is tested on its own:

- ``schedule``: planned send times (constant or Poisson arrivals) and connection ramps;
- ``histogram``: a fixed-memory log-linear latency histogram, mergeable across workers;
- ``metrics``: the one table of every figure bench reports (name, unit, direction);
- ``thresholds``: k6-style pass/fail expressions such as ``p99<50ms`` or ``loss==0``;
- ``accounting``: loss, duplicate and reorder accounting of deliveries;
- ``report_schema``: the versioned ``--json`` report;
- ``baseline``: direction-aware comparison of a run with an earlier one;
- ``timeline``: a run's per-second series (``sampling`` takes the samples, in the
  worker processes and the coordinator);
- ``report_html`` (charts drawn by ``svg``), ``report_junit``, ``report_md``: the CI
  outputs, from the facts ``report_facts`` decides once; ``report_files`` writes them.
"""
