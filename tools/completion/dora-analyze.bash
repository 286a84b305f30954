# bash completion for dora-analyze                              -*- shell-script -*-
# Installed as $(datadir)/bash-completion/completions/dora-analyze. The option lists
# are held against each command's --help by tests/sh/install.sh.

_dora_analyze_models()
{
    # a model or run: folders, and the model files the tool reads
    _filedir '@(safetensors|bin|pt|pth)'
}

_dora_analyze()
{
    local cur prev words cword
    _init_completion -n = || return

    local commands="analyze inspect plot batch merge spectrum report help"
    if [[ $cword -eq 1 ]]; then
        COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
        return
    fi
    local cmd=${words[1]} opts=""
    case $cmd in
    analyze)
        opts="--base -o --output --modules --exclude --rename --transpose --no-split --base-quant --initial-adapter -j --jobs --mem --per-row --bootstrap --csv --force --progress=auto --progress=always --progress=never -q --quiet -h --help"
        case $prev in
        --base) _dora_analyze_models; return ;;
        -o | --output) _filedir h5; return ;;
        --csv) _filedir csv; return ;;
        --initial-adapter) _filedir -d; return ;;
        --base-quant) COMPREPLY=($(compgen -W "nf4 fp4 nf4-dq fp4-dq int8 none" -- "$cur")); return ;;
        --modules | --exclude | --rename | --transpose | -j | --jobs | --mem | --bootstrap) return ;;
        esac
        ;;
    spectrum)
        opts="--base -o --output --modules --exclude --rename --transpose --no-split --top --threshold --subspace --compare --exact -j --jobs --mem --cache --initial-adapter --base-quant --force --progress=auto --progress=always --progress=never -q --quiet -h --help"
        case $prev in
        --base) _dora_analyze_models; return ;;
        -o | --output) _filedir h5; return ;;
        --cache) _filedir -d; return ;;
        --initial-adapter) _filedir -d; return ;;
        --base-quant) COMPREPLY=($(compgen -W "nf4 fp4 nf4-dq fp4-dq int8 none" -- "$cur")); return ;;
        --modules | --exclude | --rename | --transpose | --top | --threshold | --subspace | -j | --jobs | --mem) return ;;
        esac
        ;;
    plot)
        opts="-o --output --modules --runs --format --overlay --stats --stats=tsv --stats=json --no-figures --bootstrap -h --help"
        case $prev in
        -o | --output) _filedir -d; return ;;
        --format) COMPREPLY=($(compgen -W "png pdf svg png,pdf png,pdf,svg" -- "$cur")); return ;;
        --modules | --runs | --bootstrap) return ;;
        esac
        if [[ $cur != -* ]]; then _filedir h5; return; fi
        ;;
    report)
        opts="-o --output --spectrum --modules --force --bootstrap -h --help"
        case $prev in
        -o | --output) _filedir html; return ;;
        --spectrum) _filedir h5; return ;;
        --modules | --bootstrap) return ;;
        esac
        if [[ $cur != -* ]]; then _filedir h5; return; fi
        ;;
    batch)
        opts="-j --jobs --mem --progress=auto --progress=always --progress=never -q --quiet -v --verbose --report-json --junit --shard --dry-run --force --bootstrap -h --help"
        case $prev in
        --report-json) _filedir json; return ;;
        --junit) _filedir xml; return ;;
        -j | --jobs | --mem | --shard | --bootstrap) return ;;
        esac
        if [[ $cur != -* ]]; then _filedir json; return; fi
        ;;
    merge)
        opts="-q --quiet --force --progress=auto --progress=always --progress=never --bootstrap -h --help"
        [[ $prev == --bootstrap ]] && return
        if [[ $cur != -* ]]; then _filedir '@(h5|journal)'; return; fi
        ;;
    inspect)
        opts="-h --help"
        if [[ $cur != -* ]]; then _dora_analyze_models; _filedir '@(h5|json)'; return; fi
        ;;
    help)
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return
        ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
        return
    fi
    case $cmd in
    analyze | spectrum) _dora_analyze_models ;;
    esac
} &&
    complete -F _dora_analyze dora-analyze
