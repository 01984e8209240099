./main.py --seed 7
