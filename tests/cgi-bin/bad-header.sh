#!/bin/sh
printf 'Content-Type: text/plain\r\nNot a header line\r\n\r\nbody'
