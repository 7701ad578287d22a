#!/bin/sh
# The Kubernetes init Job (chaoseater-init): creates the topics, then registers the two regions by their
# agents' Services.
# Safe to run again: topics that exist are kept, and a region registered again with the same endpoint
# changes nothing.
set -eu
chaoseater topics create
chaoseater region add eu-west --endpoint http://agent-eu-west:8700 --priority 2 --meta defence=validate
chaoseater region add us-east --endpoint http://agent-us-east:8700 --priority 1 --meta defence=none
chaoseater region list
