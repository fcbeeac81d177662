#!/bin/sh
printf 'Content-Type: text/plain\r\nthis never ends the head'
