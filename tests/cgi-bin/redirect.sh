#!/bin/sh
# An absolute URI: a redirect for the client (302).
printf 'Location: http://example.com/elsewhere\r\n\r\n'
