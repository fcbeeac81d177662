#!/bin/sh
# Echoes the request body (stdin) back.
printf 'Content-Type: application/octet-stream\r\n\r\n'
exec cat
