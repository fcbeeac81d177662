#!/bin/sh
# Never answers in time; its own child must die with it (process group).
sleep 37 &
wait
