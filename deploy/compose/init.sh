#!/bin/sh
# The compose stack's one-shot job (service `init`): creates the topics, then registers the two regions.
# Safe to run again: topics that exist are kept, and a region registered again with the same endpoint
# changes nothing. The stack test (tests/stack.rs) runs this file too, with its host names rewritten.
set -eu
chaoseater topics create
chaoseater region add eu-west --endpoint http://agent-eu-west:8700 --priority 2 --meta defence=validate
chaoseater region add us-east --endpoint http://agent-us-east:8700 --priority 1 --meta defence=none
chaoseater region list
