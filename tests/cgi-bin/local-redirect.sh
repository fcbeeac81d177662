#!/bin/sh
# An abs-path with no Status: the server serves that path itself (RFC 3875 s.6.2.2).
printf 'Location: /hello.sh\r\n\r\n'
