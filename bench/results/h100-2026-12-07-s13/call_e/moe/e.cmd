/tmp/stowage-llamacpp/build/bin/llama-bench -m /tmp/mixtral-q4_0.gguf -ngl 99 -ot exps=CPU -p 16 -n 24 -r 3 -t 16 -o json
