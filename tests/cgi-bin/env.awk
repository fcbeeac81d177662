#!/usr/bin/awk -f
# Another language, and the environment exactly as exec'd: a shell would
# silently drop variables whose names are not shell identifiers.
BEGIN {
    printf "Content-Type: text/plain\r\n\r\n"
    for (name in ENVIRON) print name "=" ENVIRON[name]
}
