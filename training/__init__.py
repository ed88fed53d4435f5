"""bestiary.training"""
