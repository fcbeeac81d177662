#!/bin/sh
# Prints its whole environment, one NAME=value per line.
printf 'Content-Type: text/plain\r\n\r\n'
exec env
