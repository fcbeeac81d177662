#!/bin/sh
printf 'Status: two hundred\r\n\r\nbody'
