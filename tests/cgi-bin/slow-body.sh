#!/bin/sh
# Promises 100 bytes, sends 5, then stalls past --timeout.
printf 'Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nhello'
exec sleep 38
