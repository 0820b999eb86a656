#!/usr/bin/env python3
"""Parses a Prometheus text exposition on stdin with the Prometheus
project's own Python parser (prometheus_client) and prints every sample
as JSON: [{"name", "labels", "value"}, ...]. Used by lagerd's /metrics
test to check that the official parser reads what lagerd writes, value
for value. Exits 1 with the parser's error on malformed input."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                value = sample.value
                if math.isinf(value) or math.isnan(value):
                    value = str(value)
                samples.append({"family": family.name, "type": family.type,
                                "name": sample.name, "labels": sample.labels,
                                "value": value})
    except Exception as error:  # the parser raises ValueError and friends
        print(f"prometheus_client could not parse /metrics: {error}", file=sys.stderr)
        return 1
    json.dump(samples, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
