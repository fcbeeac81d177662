#!/bin/sh
# A fresh process per request: its pid differs every time.
printf 'Content-Type: text/plain\r\n\r\n%s' "$$"
