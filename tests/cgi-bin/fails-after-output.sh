#!/bin/sh
# A complete response, then a non-zero exit status: a script's status is incidental.
printf 'Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok'
exit 3
