#!/bin/sh
printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-From: script\r\n\r\nnot here\n'
