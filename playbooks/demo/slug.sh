#!/bin/sh
# slug TEXT...: the text as a URL slug, lower case, its words joined by `-`.
printf '%s\n' "$*" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-//; s/-$//'
