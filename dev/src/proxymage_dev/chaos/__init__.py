"""`make chaos`: the fault suite, run against a stack of its own (deploy/chaos/chaos.env, ports 4xxxx, var/chaos).

It starts that stack, seeds MIRC, runs the four services as processes (two study fetchers), drives them as a DCC
would (Kafka, the gateway's REST API, the Orthanc REST APIs, the SMTP mailbox) through each fault, stops
everything (always), prints one table (goal | measured | PASS/FAIL) and exits non-zero on any FAIL.

`python -m proxymage_dev.chaos --fast` is the subset CI runs (`make chaos-fast`); `--long` adds the 10-minute MIRC
outage to the full run. Modules: `table` (rows, the table), `phi` (the log scan), `malformed` (bad events),
`stack` (servers and service processes), `dcc` (the DCC's side: Kafka, REST, mailbox), `scenarios`, `run`.
"""
