#!/bin/bash
# A small MCP server over stdio for openmono's tests, in bash alone (the agent image has
# no other language): newline-delimited JSON-RPC, read with regular expressions, just
# enough for `initialize`, `tools/list` and `tools/call`. Its tools: `shout` repeats
# `text` in capitals; `fail` always answers with a tool error. It notes its life in
# $MCP_LOG (default `mcp.log` in its working directory): `started`, each call, and
# `stopped` when it ends.
log=${MCP_LOG:-mcp.log}
echo "started $$" >>"$log"
trap 'echo stopped >>"$log"' EXIT

reply() { printf '{"jsonrpc":"2.0","id":%s,"result":%s}\n' "$1" "$2"; }
refuse() { printf '{"jsonrpc":"2.0","id":%s,"error":{"code":%s,"message":"%s"}}\n' "$1" "$2" "$3"; }

while IFS= read -r line; do
    id= method=
    [[ $line =~ \"id\":([0-9]+) ]] && id=${BASH_REMATCH[1]}
    [[ $line =~ \"method\":\"([^\"]+)\" ]] && method=${BASH_REMATCH[1]}
    case $method in
    initialize)
        [[ $line =~ \"protocolVersion\":\"([^\"]+)\" ]]
        reply "$id" "{\"protocolVersion\":\"${BASH_REMATCH[1]}\",\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"shout\",\"version\":\"1.0.0\"}}"
        ;;
    tools/list)
        reply "$id" '{"tools":[{"name":"shout","description":"Repeat a text in capitals","inputSchema":{"type":"object","properties":{"text":{"type":"string","description":"What to shout"}},"required":["text"]}},{"name":"fail","description":"Always fails","inputSchema":{"type":"object","properties":{}}}]}'
        ;;
    tools/call)
        echo "call $line" >>"$log"
        if [[ $line =~ \"name\":\"shout\" && $line =~ \"text\":\"([^\"]*)\" ]]; then
            reply "$id" "{\"content\":[{\"type\":\"text\",\"text\":\"${BASH_REMATCH[1]^^}!\"}]}"
        elif [[ $line =~ \"name\":\"fail\" ]]; then
            reply "$id" '{"content":[{"type":"text","text":"the fail tool always fails"}],"isError":true}'
        else
            refuse "$id" -32602 "no such tool"
        fi
        ;;
    notifications/*) ;;
    *) [[ -n $id ]] && refuse "$id" -32601 "no method $method" ;;
    esac
done
