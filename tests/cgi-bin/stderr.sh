#!/bin/sh
echo "a line for the server log from stderr.sh" >&2
printf 'Content-Type: text/plain\r\n\r\nok'
