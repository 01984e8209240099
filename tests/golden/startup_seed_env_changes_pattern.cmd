CHAOS_SEED=7 ./main.py
