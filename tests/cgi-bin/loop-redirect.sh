#!/bin/sh
printf 'Location: /loop-redirect.sh\r\n\r\n'
