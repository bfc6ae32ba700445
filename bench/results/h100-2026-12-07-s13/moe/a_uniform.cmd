gpu_pack/bin/_stowage bench --model /dev/shm/mixtral-nf4dq --device cuda --max-memory 0=10GiB --no-resident --batches 1 --prompt-tokens 16 --new-tokens 24 --routing-trace uniform --cpu-moe 32 --json
